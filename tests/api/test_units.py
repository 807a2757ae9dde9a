"""The API's pure pieces: prices, token buckets, JWT checks, keys, signatures, errors, the
remembered look-ups (ModelCaches, content policies)."""

import asyncio
import secrets
import time
from decimal import Decimal

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from diffleet_api.buckets import BucketPolicy, take
from diffleet_api.errors import invalid_from
from diffleet_api.keys import key_hash, looks_like_key, new_key
from diffleet_api.settings import JWT_AUDIENCE, ApiSettings
from diffleet_api.tokens import Claims, InvalidTokenError, Role, decode
from diffleet_api.webhooks import backoff, sign, verify
from diffleet_core.pricing import cost_breakdown, job_cost
from diffleet_core.remembered import Remembered
from diffleet_core.resources.generation_job import GenerationJobSpec
from diffleet_core.resources.model_cache import BaseModelFamily
from diffleet_core.settings import DEVELOPMENT_JWT_SECRET, InsecureCredentialError

SD15, SDXL = BaseModelFamily.SD15, BaseModelFamily.SDXL


def spec(**fields: object) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "m", "prompt": "p"} | fields)


INIT = "s3://bkt/i.png"


@pytest.mark.parametrize(
    ("fields", "family", "cost"),
    [
        ({}, SD15, Decimal(1)),
        ({"width": 1024, "height": 1024}, SD15, Decimal(4)),
        ({"width": 520, "height": 512}, SD15, Decimal(2)),
        ({"batchSize": 3}, SD15, Decimal(3)),
        ({"width": 1024, "height": 1024}, SDXL, Decimal(8)),
        ({"loras": [{"model": "a"}, {"model": "b"}]}, SD15, Decimal(2)),
        ({"controlNet": {"model": "c", "image": INIT}}, SDXL, Decimal(3)),
        # +0.1 per embedding.
        ({"embeddings": ["e1", "e2"]}, SD15, Decimal("1.2")),
        # Outpaint: only the added pixels, 1024x512 here (2 units).
        (
            {"mode": "outpaint", "initImage": INIT, "outpaint": {"left": 512, "right": 512}},
            SD15,
            Decimal(2),
        ),
        # hiresFix: its 1024x1024 pass at half the family's price (4 units * 2 * 0.5).
        ({"hiresFix": {"scale": 2.0}}, SDXL, Decimal(2 + 4)),
        # upscale: the 2048x2048 outputs, 16 units at 0.25.
        ({"upscale": {"model": "x4", "scale": 4.0}}, SD15, Decimal(1 + 4)),
        # Mode upscale: nothing generated, only the 1024x1024 output (4 units at 0.25).
        (
            {"mode": "upscale", "model": None, "prompt": "", "initImage": INIT,
             "upscale": {"model": "x4", "scale": 2.0}},
            None,
            Decimal(1),
        ),
        # restoreFaces: the output pixels at 0.25.
        ({"restoreFaces": {"model": "gfpgan"}}, SD15, Decimal("1.25")),
    ],
)  # fmt: skip
def test_job_cost(fields: dict[str, object], family: BaseModelFamily | None, cost: Decimal) -> None:
    assert job_cost(spec(**fields), family) == cost


def test_cost_breakdown_names_each_feature_of_a_batch() -> None:
    job = spec(
        batchSize=2,
        hiresFix={"scale": 2.0},
        upscale={"model": "x4", "scale": 2.0},
        restoreFaces={"model": "gfpgan"},
        loras=[{"model": "ink"}],
    )
    # Base 512x512 -> hires 1024x1024 -> upscaled 2048x2048 (16 units an image).
    assert cost_breakdown(job, SD15) == {
        "generation": Decimal(2),
        "adapters": Decimal("0.5"),
        "hiresFix": Decimal(4),
        "upscale": Decimal(8),
        "restoreFaces": Decimal(8),
    }
    assert job_cost(job, SD15) == Decimal("22.5")


MINUTE = BucketPolicy("requests", capacity=60, window_seconds=60)


def test_bucket_takes_until_empty_then_names_the_wait() -> None:
    decision = take(MINUTE, tokens=1, elapsed_seconds=0, cost=1)
    assert decision.allowed
    assert decision.remaining == 0
    refused = take(MINUTE, tokens=decision.tokens, elapsed_seconds=0.25, cost=1)
    assert not refused.allowed
    assert refused.retry_after_seconds == 1
    assert refused.reset_seconds == 60


def test_bucket_refills_at_its_rate_and_caps_at_capacity() -> None:
    assert take(MINUTE, tokens=0, elapsed_seconds=10, cost=1).remaining == 9
    assert take(MINUTE, tokens=50, elapsed_seconds=3600, cost=1).remaining == 59


def test_cost_above_capacity_is_never_allowed() -> None:
    hour = BucketPolicy("generations", capacity=10, window_seconds=3600)
    refused = take(hour, tokens=10, elapsed_seconds=0, cost=11)
    assert not refused.allowed
    assert refused.retry_after_seconds == 3600


SETTINGS = ApiSettings()


def claims(**overrides: object) -> dict[str, object]:
    return {
        "sub": "u1",
        "tenant": "acme",
        "role": "member",
        "aud": JWT_AUDIENCE,
        "iss": SETTINGS.jwt_issuer,
        "exp": int(time.time()) + 60,
    } | overrides


def hs256(**overrides: object) -> str:
    return jwt.encode(claims(**overrides), DEVELOPMENT_JWT_SECRET, algorithm="HS256")


def test_jwt_hs256_accepted() -> None:
    assert decode(hs256(), SETTINGS) == Claims("u1", "acme", Role.MEMBER)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"aud": "other"}, "audience"),
        ({"iss": "https://other"}, "issuer"),
        ({"role": "root"}, "role"),
    ],
)
def test_jwt_refusals(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidTokenError, match=message):
        decode(hs256(**overrides), SETTINGS)


def test_jwt_rs256_with_the_configured_public_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = ApiSettings(jwt_secret="", jwt_public_key=public.decode())
    token = jwt.encode(claims(role="viewer"), private, algorithm="RS256")
    assert decode(token, settings).role == Role.VIEWER
    with pytest.raises(InvalidTokenError, match="not accepted"):
        decode(hs256(), settings)


def test_none_algorithm_is_refused() -> None:
    unsigned = jwt.encode(claims(), key=None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(InvalidTokenError, match="not accepted"):
        decode(unsigned, SETTINGS)


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.MEMBER)
    assert Role.MEMBER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.MEMBER)


def test_keys_are_random_prefixed_and_hashed() -> None:
    first, second = new_key(), new_key()
    assert first != second
    assert looks_like_key(first)
    assert len(key_hash(first)) == 32


def test_webhook_signature_verifies_and_detects_tampering() -> None:
    body = b'{"phase":"Succeeded"}'
    header = sign("s3cret", body, 1_700_000_000)
    assert verify("s3cret", body, header, tolerance_seconds=300, now=1_700_000_010)
    assert not verify("s3cret", body + b" ", header, tolerance_seconds=300, now=1_700_000_010)
    assert not verify("other", body, header, tolerance_seconds=300, now=1_700_000_010)
    assert not verify("s3cret", body, header, tolerance_seconds=300, now=1_700_009_999)


def test_webhook_backoff_doubles_up_to_its_cap() -> None:
    settings = ApiSettings(webhook_backoff_seconds=1, webhook_backoff_max_seconds=10)
    assert [backoff(settings, n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_validation_errors_map_to_crd_rules() -> None:
    with pytest.raises(ValidationError) as caught:
        GenerationJobSpec.model_validate(
            {"model": "m", "prompt": "p" * 2001, "width": 70, "sampler": "x", "extra": 1}
        )
    rules = {(e.field, e.rule) for e in invalid_from(caught.value).errors or []}
    assert rules == {
        ("prompt", "maxLength"),
        ("width", "multipleOf"),
        ("sampler", "enum"),
        ("extra", "additionalProperties"),
    }


@pytest.mark.parametrize(
    ("fields", "variable"),
    [
        ({}, "DIFFLEET_API_JWT_SECRET"),
        ({"jwt_secret": ""}, "DIFFLEET_API_JWT_SECRET"),
        ({"jwt_secret": secrets.token_hex(16)}, "DIFFLEET_API_WEBHOOK_SECRET"),
    ],
)
def test_outside_development_mode_the_api_secrets_are_refused(
    fields: dict[str, str], variable: str
) -> None:
    settings = ApiSettings(**fields)  # type: ignore[arg-type]
    with pytest.raises(InsecureCredentialError, match=variable):
        settings.check_credentials(development_mode=False)
    settings.check_credentials(development_mode=True)


def test_an_empty_jwt_secret_is_allowed_with_a_public_key_only() -> None:
    settings = ApiSettings(
        jwt_secret="", jwt_public_key="a PEM key", webhook_secret=secrets.token_hex(16)
    )
    settings.check_credentials(development_mode=False)


def test_an_empty_jwt_secret_without_a_public_key_refuses_every_token() -> None:
    settings = ApiSettings(jwt_secret="", jwt_public_key="")
    for token in (hs256(), jwt.encode(claims(), key=None, algorithm="none")):  # type: ignore[arg-type]
        with pytest.raises(InvalidTokenError, match="not accepted"):
            decode(token, settings)


def test_remembered_lookups_are_shared_and_absent_models_remembered() -> None:
    lookups: list[str] = []

    async def found() -> BaseModelFamily | None:
        lookups.append("found")
        await asyncio.sleep(0.01)
        return SDXL

    async def absent() -> BaseModelFamily | None:
        lookups.append("absent")
        return None

    async def ask() -> list[BaseModelFamily | None]:
        families: Remembered[BaseModelFamily | None] = Remembered(seconds=60)
        answers = await asyncio.gather(*(families.get("ns", "m", found) for _ in range(5)))
        answers += [await families.get("ns", "gone", absent) for _ in range(3)]
        families.forget("ns", "m")
        answers.append(await families.get("ns", "m", found))
        return answers

    assert asyncio.run(ask()) == [SDXL] * 5 + [None] * 3 + [SDXL]
    assert lookups == ["found", "absent", "found"]


def test_remembered_lookups_forget_failed_and_expired_ones() -> None:
    attempts: list[int] = []

    async def flaky() -> BaseModelFamily | None:
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError("Kubernetes API unreachable")
        return SD15

    async def ask() -> BaseModelFamily | None:
        families: Remembered[BaseModelFamily | None] = Remembered(seconds=0)
        with pytest.raises(TimeoutError):
            await families.get("ns", "m", flaky)
        await families.get("ns", "m", flaky)
        return await families.get("ns", "m", flaky)  # expired at once: asked again

    assert asyncio.run(ask()) == SD15
    assert len(attempts) == 3
