"""The contract in diffleet_core: queue names, backoff steps, S3 keys, model digests,
result messages and the GenerationJob spec's bounds and cross-field rules."""

import hashlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from diffleet_core.messages import RESULT_EVENT, JobFailed, JobRef, JobStarted, JobSucceeded
from diffleet_core.queues import BACKOFF_STEPS_SECONDS, Topology, backoff_step
from diffleet_core.resources.base import wire_only
from diffleet_core.resources.generation_job import (
    ANY_GPU_CLASS,
    S3_URI_PATTERN,
    GenerationJobSpec,
    JobOutput,
    Mode,
    Sampler,
    Tier,
    spec_rule_violations,
)
from diffleet_core.resources.model_cache import ModelCacheSpec
from diffleet_core.resources.text import TEXT_PATTERN, Text
from diffleet_core.storage import S3Location, manifest_digest, output_key, output_prefix

# -- queues ---------------------------------------------------------------------------


def test_topology_names_carry_the_prefix() -> None:
    topology = Topology("t-1")
    assert topology.tenant_queue(Tier.PRO, "team-a") == "t-1.jobs.pro.team-a"
    assert topology.tier_queue(Tier.PRO) == "t-1.jobs.pro"
    pattern = re.compile(topology.tenant_queues_regex(Tier.PRO))
    assert pattern.match("t-1.jobs.pro.team-a")
    assert not pattern.match("t-1.jobs.pro")  # the per-tier queue of releases before
    assert not pattern.match("t-1.jobs.free.team-a")
    assert not pattern.match("t-1x.jobs.pro.team-a")
    assert topology.worker_queue("gpu-0") == "t-1.worker.gpu-0"
    assert topology.results_queue == "t-1.results"
    assert topology.progress_exchange == "t-1.progress"
    assert topology.control_exchange == "t-1.control"
    assert topology.delay(16) == "t-1.delay.16"


def test_topology_default_prefix_and_tier_queues_highest_first() -> None:
    assert list(Topology().tier_queues().items()) == [
        (Tier.ENTERPRISE, "diffleet.jobs.enterprise"),
        (Tier.PRO, "diffleet.jobs.pro"),
        (Tier.STANDARD, "diffleet.jobs.standard"),
        (Tier.FREE, "diffleet.jobs.free"),
    ]


@pytest.mark.parametrize(
    ("seconds", "step"),
    [(0, 1), (0.1, 1), (1, 1), (1.5, 2), (3, 4), (8, 8), (33, 64), (64, 64), (1000, 64)],
)
def test_backoff_step(seconds: float, step: int) -> None:
    assert backoff_step(seconds) == step
    assert step in BACKOFF_STEPS_SECONDS


# -- storage --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://bucket/key", "bucket", "key"),
        ("s3://diffleet-outputs/ns/job/uid/0.png", "diffleet-outputs", "ns/job/uid/0.png"),
        ("s3://my.bucket/models/sdxl/", "my.bucket", "models/sdxl/"),
    ],
)
def test_s3_location_parses_good_uris(uri: str, bucket: str, key: str) -> None:
    location = S3Location.parse(uri)
    assert location == S3Location(bucket=bucket, key=key)
    assert location.uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "bucket/key",
        "http://bucket/key",
        "s3://bucket",
        "s3://bucket/",
        "s3://bucket///",
        "s3:///key",
        "s3:/bucket/key",
    ],
)
def test_s3_location_refuses_bad_uris_naming_them(uri: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(uri))):
        S3Location.parse(uri)


def test_output_keys() -> None:
    assert output_prefix("team-a", "cat", "0b1c-uid") == "team-a/cat/0b1c-uid/"
    assert output_key("team-a", "cat", "0b1c-uid", 0, "png") == "team-a/cat/0b1c-uid/0.png"
    assert output_key("team-a", "cat", "0b1c-uid", 7, "webp") == "team-a/cat/0b1c-uid/7.webp"


FILES = {
    "unet/diffusion_pytorch_model.safetensors": "a" * 64,
    "model_index.json": "b" * 64,
    "vae/config.json": "c" * 64,
}


def test_manifest_digest_is_the_sha256_of_the_sorted_manifest() -> None:
    manifest = (
        f"{'b' * 64}  model_index.json\n"
        f"{'a' * 64}  unet/diffusion_pytorch_model.safetensors\n"
        f"{'c' * 64}  vae/config.json\n"
    )
    assert manifest_digest(FILES) == hashlib.sha256(manifest.encode()).hexdigest()


def test_manifest_digest_does_not_depend_on_order() -> None:
    assert manifest_digest(dict(reversed(FILES.items()))) == manifest_digest(FILES)


def test_manifest_digest_changes_with_a_hash_or_a_path() -> None:
    digest = manifest_digest(FILES)
    assert manifest_digest({**FILES, "vae/config.json": "d" * 64}) != digest
    renamed = {("vae/other.json" if p == "vae/config.json" else p): h for p, h in FILES.items()}
    assert manifest_digest(renamed) != digest


def test_manifest_digest_of_nothing() -> None:
    assert manifest_digest({}) == hashlib.sha256(b"").hexdigest()


# -- messages -------------------------------------------------------------------------

REF = JobRef(uid="uid-1", namespace="ns", name="cat", attempt=2)
AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
EVENTS = [
    JobStarted(job=REF, worker="gpu-0", at=AT),
    JobSucceeded(
        job=REF,
        worker="gpu-0",
        at=AT,
        outputs=[
            JobOutput(
                uri="s3://out/ns/cat/uid-1/0.png", format="png", sha256="f" * 64, width=8, height=8
            )
        ],
        model_digest="sha256:model",
        lora_digests={"style": "sha256:lora"},
    ),
    JobFailed(job=REF, worker="gpu-0", at=AT, reason="OutOfMemory", message="OOM", retryable=True),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda event: type(event).__name__)
def test_result_event_round_trip(event: JobStarted | JobSucceeded | JobFailed) -> None:
    parsed = RESULT_EVENT.validate_json(event.to_bytes())
    assert type(parsed) is type(event)
    assert parsed == event


def test_result_event_refuses_an_unknown_event() -> None:
    body = JobStarted(job=REF, worker="gpu-0", at=AT).to_bytes().replace(b"started", b"paused")
    with pytest.raises(ValidationError):
        RESULT_EVENT.validate_json(body)


# -- GenerationJobSpec ----------------------------------------------------------------

INIT = "s3://diffleet-uploads/init.png"
MASK = "s3://diffleet-uploads/mask.png"


def spec(**fields: Any) -> GenerationJobSpec:
    return GenerationJobSpec.model_validate({"model": "sdxl", "prompt": "a cat", **fields})


def test_spec_defaults() -> None:
    job = spec()
    assert job.mode is Mode.TXT2IMG
    assert (job.width, job.height) == (512, 512)
    assert job.steps == 20
    assert job.guidance_scale == 7.0
    assert job.sampler is Sampler.EULER_A
    assert job.seed is None
    assert job.batch_size == 1
    assert job.negative_prompt == ""
    assert job.loras is None
    assert job.init_image is None
    assert job.mask_image is None
    assert job.strength is None
    assert job.control_net is None
    assert job.priority is None
    assert job.gpu_class == ANY_GPU_CLASS
    assert job.timeout_seconds == 600
    assert job.max_retries == 2
    assert job.ttl_seconds_after_finished == 86400
    assert job.webhook_url is None
    assert job.cancel is False
    assert spec_rule_violations(job) == []


def test_spec_reads_camel_case() -> None:
    job = spec(guidanceScale=3.5, batchSize=4, gpuClass="h100", initImage=INIT, mode="img2img")
    assert (job.guidance_scale, job.batch_size, job.gpu_class) == (3.5, 4, "h100")
    assert job.init_image == INIT


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"mode": "img2img", "initImage": INIT}, id="img2img"),
        pytest.param({"mode": "img2img", "initImage": INIT, "strength": 0.5}, id="img2img+s"),
        pytest.param({"mode": "inpaint", "initImage": INIT, "maskImage": MASK}, id="inpaint"),
        pytest.param(
            {"mode": "inpaint", "initImage": INIT, "maskImage": MASK, "strength": 1.0},
            id="inpaint+strength",
        ),
    ],
)
def test_spec_accepts_consistent_modes(fields: dict[str, Any]) -> None:
    assert spec_rule_violations(spec(**fields)) == []


INIT_REQUIRED = "initImage is required unless mode is txt2img or txt2vid"
INIT_ONLY = "initImage is not allowed when mode is txt2img or txt2vid"
MASK_RULE = "maskImage is required when, and only when, mode is inpaint"
STRENGTH_RULE = "strength is allowed only with an initImage, and not in mode upscale"


IMG2IMG, INPAINT = Mode.IMG2IMG, Mode.INPAINT


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        pytest.param({"mode": IMG2IMG}, [INIT_REQUIRED], id="img2img without init"),
        pytest.param({"init_image": INIT}, [INIT_ONLY], id="txt2img with init"),
        pytest.param({"mode": INPAINT, "init_image": INIT}, [MASK_RULE], id="inpaint no mask"),
        pytest.param(
            {"mode": IMG2IMG, "init_image": INIT, "mask_image": MASK},
            [MASK_RULE],
            id="img2img with mask",
        ),
        pytest.param({"mask_image": MASK}, [MASK_RULE], id="txt2img with mask"),
        pytest.param({"strength": 0.5}, [STRENGTH_RULE], id="strength without init"),
        pytest.param({"mode": INPAINT}, [INIT_REQUIRED, MASK_RULE], id="inpaint without either"),
        pytest.param(
            {"mode": IMG2IMG, "strength": 0.5},
            [INIT_REQUIRED, STRENGTH_RULE],
            id="img2img with strength but no init",
        ),
    ],
)
def test_spec_cross_field_rules(fields: dict[str, Any], violations: list[str]) -> None:
    """spec_rule_violations lists every broken rule; validation refuses with the first."""
    data = {"model": "sdxl", "prompt": "a cat", **fields}
    unchecked = GenerationJobSpec.model_construct(**data)
    assert spec_rule_violations(unchecked) == violations
    with pytest.raises(ValidationError) as raised:
        GenerationJobSpec.model_validate(data)
    [error] = raised.value.errors()
    assert error["type"] == "value_error"
    assert error["msg"] == f"Value error, {violations[0]}"


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        pytest.param({"width": 513}, ("width",), "multiple", id="width not a multiple of 8"),
        pytest.param({"height": 56}, ("height",), "greater than or equal", id="height < 64"),
        pytest.param({"width": 2056}, ("width",), "less than or equal", id="width > 2048"),
        pytest.param({"steps": 0}, ("steps",), "greater than or equal", id="no steps"),
        pytest.param(
            {"guidanceScale": 31}, ("guidanceScale",), "less than or equal", id="guidance > 30"
        ),
        pytest.param({"batchSize": 9}, ("batchSize",), "less than or equal", id="batch > 8"),
        pytest.param({"seed": 2**32}, ("seed",), "less than or equal", id="seed > 2**32-1"),
        pytest.param({"seed": -1}, ("seed",), "greater than or equal", id="negative seed"),
        pytest.param({"prompt": "x" * 2001}, ("prompt",), "at most 2000", id="long prompt"),
        pytest.param({"model": "SDXL"}, ("model",), "pattern", id="model name not DNS"),
        pytest.param({"initImage": "http://x/y"}, ("initImage",), "pattern", id="init not s3"),
        pytest.param({"gpuClass": "H100"}, ("gpuClass",), "pattern", id="gpu class not DNS"),
        pytest.param({"colour": "red"}, ("colour",), "not permitted", id="unknown field"),
    ],
)
def test_spec_bound_errors_name_the_field(
    fields: dict[str, Any], loc: tuple[str, ...], words: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        spec(**fields)
    [error] = raised.value.errors()
    assert error["loc"] == loc
    assert words in error["msg"]


def test_width_513_is_refused_as_not_a_multiple_of_8() -> None:
    with pytest.raises(ValidationError) as raised:
        spec(width=513)
    error = raised.value.errors()[0]
    assert error["loc"] == ("width",)
    assert "multiple" in error["msg"]
    assert "8" in error["msg"]


# -- strings, URLs and types of the spec ------------------------------------------------

REFUSED_CHARACTERS = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x0e", "\x1b", "\x1f"]
LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
ACCEPTED_TEXT = [
    "tab\tnewline\ncarriage return\r",
    "emoji 🎨🏳️‍🌈",
    "CJK 灯台と夕暮れ",
    "RTL ‏منارة عند الغسق‎ מגדלור",
    "combining e\u0301 a\u0308 \u0915\u094d\u0937",
    "DEL \x7f and C1 \x85 are not C0",
]


@pytest.mark.parametrize("character", REFUSED_CHARACTERS + LONE_SURROGATES, ids=ascii)
def test_text_refuses_nul_c0_controls_and_lone_surrogates(character: str) -> None:
    text = f"a lighthouse{character} at dusk"
    with pytest.raises(ValidationError) as raised:
        TypeAdapter(Text).validate_python(text)
    [error] = raised.value.errors()
    assert error["type"] == "control_character"
    assert error["msg"].startswith(f"U+{ord(character):04X} at character 12:")


@pytest.mark.parametrize("text", ACCEPTED_TEXT, ids=ascii)
def test_text_accepts_all_other_unicode(text: str) -> None:
    assert TypeAdapter(Text).validate_python(text) == text
    assert re.fullmatch(TEXT_PATTERN, text)


@pytest.mark.parametrize("character", REFUSED_CHARACTERS, ids=ascii)
def test_text_pattern_of_the_crd_refuses_the_same_characters(character: str) -> None:
    assert re.fullmatch(TEXT_PATTERN, f"a{character}b") is None


def string_fields() -> list[tuple[str, dict[str, Any]]]:
    """Every string field of the spec, each in a spec that is valid but for it."""
    image = {"mode": "img2img", "initImage": INIT}
    return [
        ("prompt", {}),
        ("negativePrompt", {}),
        ("model", {}),
        ("initImage", image),
        ("maskImage", {"mode": "inpaint", "initImage": INIT}),
        ("webhookUrl", {}),
    ]


@pytest.mark.parametrize(("field", "fields"), string_fields(), ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("character", ["\x00", "\x1b", "\ud800"], ids=ascii)
def test_every_string_field_of_the_spec_refuses_control_characters(
    field: str, fields: dict[str, Any], character: str
) -> None:
    good = {"model": "sdxl", "prompt": "a cat", "webhookUrl": "https://example.com/h"}
    good |= {"initImage": INIT, "maskImage": MASK} if "initImage" in fields else {}
    value = {**good, **fields}.get(field, "x") + character
    with pytest.raises(ValidationError) as raised:
        spec(**{**fields, field: value})
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [
        ((field,), "control_character")
    ]


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"loras": [{"model": "ink\x00"}]}, ("loras", 0, "model")),
        ({"controlNet": {"model": "cn", "image": INIT + "\x01"}}, ("controlNet", "image")),
    ],
    ids=["lora-model", "controlNet-image"],
)
def test_nested_string_fields_refuse_control_characters(
    fields: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as raised:
        spec(**fields)
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [(loc, "control_character")]


def test_model_cache_strings_refuse_control_characters() -> None:
    good = {"source": "s3://diffleet-models/ns/m.safetensors", "format": "safetensors"}
    for field, value in [("source", good["source"] + "\x00"), ("sha256", "a" * 63 + "\x00")]:
        with pytest.raises(ValidationError) as raised:
            ModelCacheSpec.model_validate(good | {"baseModel": "sd15", field: value})
        assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [
            ((field,), "control_character")
        ]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket//key",
        "s3:///key",
        "s3://bucket/a//b.png",
        "s3://bucket/",
        "s3://bucket/./a.png",
        "s3://bucket/a/../b.png",
        "s3://bucket/a/..",
        "s3://bucket/a/b.png\n",
        "s3://bucket/a b\x7f.png",
        "s3://Bucket/a.png",
    ],
    ids=ascii,
)
def test_malformed_s3_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValidationError) as raised:
        spec(mode="img2img", initImage=uri)
    assert [e["loc"] for e in raised.value.errors()] == [("initImage",)]


@pytest.mark.parametrize(
    "uri",
    ["s3://bucket/a.png", "s3://my.bucket/models/sdxl/", "s3://bucket/.a/..b/c..", "s3://b0b/é 🎨"],
    ids=ascii,
)
def test_well_formed_s3_uris_are_accepted(uri: str) -> None:
    assert spec(mode="img2img", initImage=uri).init_image == uri
    assert re.fullmatch(S3_URI_PATTERN, uri)


@pytest.mark.parametrize(
    ("url", "error_type"),
    [
        ("https://:80/x", "string_pattern_mismatch"),
        ("https:///x", "string_pattern_mismatch"),
        ("https://host:99999/x", "string_pattern_mismatch"),
        ("https://host:65536/x", "string_pattern_mismatch"),
        ("https://host:0/x", "string_pattern_mismatch"),
        ("https://host:abc/x", "string_pattern_mismatch"),
        ("https://a@/x", "string_pattern_mismatch"),
        ("https://exa mple.com/", "string_pattern_mismatch"),
        ("ftp://example.com/", "string_pattern_mismatch"),
        ("https://[zz::1]/x", "string_pattern_mismatch"),
        # The pattern (which the CRD holds too) lets these through; httpx refuses them.
        ("https://xn--zz/x", "url_parsing"),
        ("https://[::1::2]/x", "url_parsing"),
    ],
)
def test_webhook_urls_that_httpx_cannot_use_are_refused(url: str, error_type: str) -> None:
    with pytest.raises(ValidationError) as raised:
        spec(webhookUrl=url)
    assert [(e["loc"], e["type"]) for e in raised.value.errors()] == [(("webhookUrl",), error_type)]


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "http://127.0.0.1:8080/hook?a=b#c",
        "https://user:pw@example.com:65535/",
        "http://[::1]:1/x",
        "https://bücher.de/é",
    ],
)
def test_webhook_urls_httpx_parses_are_accepted_as_given(url: str) -> None:
    assert spec(webhookUrl=url).webhook_url == url
    parsed = httpx.URL(url)
    assert parsed.host
    assert parsed.port is None or 1 <= parsed.port <= 65535


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"width": "512"}, ("width",)),
        ({"width": 512.0}, ("width",)),
        ({"steps": True}, ("steps",)),
        ({"seed": "42"}, ("seed",)),
        ({"guidanceScale": "7"}, ("guidanceScale",)),
        ({"guidanceScale": False}, ("guidanceScale",)),
        ({"cancel": 1}, ("cancel",)),
        ({"cancel": "true"}, ("cancel",)),
        ({"loras": [{"model": "ink", "weight": "1"}]}, ("loras", 0, "weight")),
        ({"prompt": 5}, ("prompt",)),
    ],
    ids=ascii,
)
def test_spec_numbers_and_booleans_are_not_coerced(
    fields: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as raised:
        spec(**fields)
    assert [e["loc"] for e in raised.value.errors()] == [loc]


def test_an_integer_is_a_number() -> None:
    """JSON has one number type: 7 is a valid guidanceScale, as the API server stores it."""
    assert spec(guidanceScale=7).guidance_scale == 7.0


def test_wire_only_refuses_snake_case_names_at_every_level() -> None:
    adapter: TypeAdapter[GenerationJobSpec] = TypeAdapter(
        Annotated[GenerationJobSpec, wire_only(GenerationJobSpec)]
    )
    body = {
        "model": "sdxl",
        "prompt": "a cat",
        "negative_prompt": "dogs",
        "controlNet": {"model": "cn", "image": INIT, "conditioning_scale": 0.5},
    }
    with pytest.raises(ValidationError) as raised:
        adapter.validate_python(body)
    assert sorted((e["loc"], e["type"]) for e in raised.value.errors()) == [
        (("controlNet", "conditioning_scale"), "extra_forbidden"),
        (("negative_prompt",), "extra_forbidden"),
    ]
    camel = {"model": "sdxl", "prompt": "a cat", "negativePrompt": "dogs"}
    assert adapter.validate_python(camel).negative_prompt == "dogs"
