"""Submitting jobs: honour the Idempotency-Key, check that their images are the tenant's
and their prompts pass its content policy, check their models and price them, check the
generation rate limit and the balance (both as read with the credential), create the
GenerationJobs, then take the generation tokens, reserve the credits and record the jobs
in one statement. A failure before that statement commits (tokens or a balance spent
meanwhile by a concurrent submission: a 429 or 402 there) deletes the jobs already
created, so a submission (one job or a batch) is all or nothing."""

import asyncio
import hashlib
import json
import logging
import secrets
import string
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from diffleet_api import ledger, ratelimits
from diffleet_api.buckets import BucketPolicy
from diffleet_api.deps import Principal
from diffleet_api.errors import FieldError, InvalidError, invalid
from diffleet_api.history import find_job
from diffleet_api.job_models import (
    ModelKind,
    fit_errors,
    image_encoders,
    model_errors,
    named_models,
    needed_detectors,
    pricing_family,
)
from diffleet_api.job_styles import styled_specs
from diffleet_api.kube import Body, JobTags
from diffleet_api.moderation import denied_prompts, policy_of
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_api.tenants import Tenant
from diffleet_api.uploads import foreign_images
from diffleet_core.model_rules import lookup_namespaces
from diffleet_core.pricing import cost_breakdown
from diffleet_core.resources.generation_job import ControlType, GenerationJobSpec, Tier
from diffleet_core.resources.model_cache import ModelType
from diffleet_core.styles import OVERRIDABLE

NAME_ALPHABET = string.ascii_lowercase + string.digits
NAME_LENGTH = 10
CREATE_CONCURRENCY = 16

logger = logging.getLogger(__name__)

Breakdown = dict[str, Decimal]
"""A job's credits by feature (generation, hiresFix, upscale, ...): only those it uses."""


@dataclass(frozen=True)
class Submitted:
    jobs: list[JobPublic]
    replayed: bool


@dataclass(frozen=True)
class Claim:
    """An Idempotency-Key and the digest of the request it came with."""

    key: str
    digest: str


class KeyTakenMeanwhileError(Exception):
    """Another request with the same Idempotency-Key committed first."""


def new_job_name() -> str:
    """`gj-` and 10 random letters or digits, from one draw of the OS's randomness."""
    number = secrets.randbelow(len(NAME_ALPHABET) ** NAME_LENGTH)
    letters = []
    for _ in range(NAME_LENGTH):
        number, index = divmod(number, len(NAME_ALPHABET))
        letters.append(NAME_ALPHABET[index])
    return "gj-" + "".join(letters)


def wire_spec(spec: GenerationJobSpec) -> Body:
    """The spec as the GenerationJob carries it: without the fields a style preset fills
    that the client left out (the operator applies the style to those only)."""
    left_out = set(OVERRIDABLE - spec.model_fields_set)
    body: Body = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=left_out)
    return body


def request_digest(specs: list[GenerationJobSpec], names: list[str] | None) -> str:
    canonical = json.dumps([[wire_spec(s) for s in specs], names], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def long_prompts(
    specs: list[GenerationJobSpec], tier: Tier, limit: int, field_prefix: str
) -> list[FieldError]:
    """An error for each prompt longer than the tier allows (the CRD allows more)."""
    errors = []
    for index, spec in enumerate(specs):
        where = f"{field_prefix}[{index}]." if field_prefix else ""
        errors += [
            FieldError(
                field=f"{where}{field}",
                rule="maxLength",
                message=f"{field} is {len(text)} characters; the {tier.value} tier allows"
                f" at most {limit}",
            )
            for field, text in (("prompt", spec.prompt), ("negativePrompt", spec.negative_prompt))
            if len(text) > limit
        ]
    return errors


async def model_kind(runtime: Runtime, namespace: str, name: str) -> ModelKind | None:
    """A ModelCache's kind, looked up as the operator does (lookup_namespaces)."""
    for where in lookup_namespaces(namespace, runtime.platform.system_namespace):

        async def lookup(where: str = where) -> ModelKind | None:
            body = await runtime.kube.get_model(where, name)
            return None if body is None else ModelKind.of(body)

        kind = await runtime.models.get(where, name, lookup)
        if kind is not None:
            return kind
    return None


async def prices(
    runtime: Runtime, namespace: str, specs: list[GenerationJobSpec], field_prefix: str
) -> list[Breakdown]:
    """Each job's credits by feature (diffleet_core.pricing), once every model it names
    exists and is of the type its field asks for, and they fit together as the operator's
    admission judges them (job_models.fit_errors)."""
    wanted = sorted({named.name for spec in specs for named in named_models(spec)})
    kinds = await model_kinds(runtime, namespace, wanted)
    where = f"{namespace!r} or {runtime.platform.system_namespace!r}"
    prefixes = [f"{field_prefix}[{index}]." if field_prefix else "" for index in range(len(specs))]
    errors = []
    for spec, prefix in zip(specs, prefixes, strict=True):
        errors += model_errors(spec, kinds, where, prefix)
    if errors:
        raise invalid(errors)
    encoders = sorted({name for spec in specs for name in image_encoders(spec, kinds)})
    kinds |= await model_kinds(runtime, namespace, encoders)
    if any(needed_detectors(spec, kinds) for spec in specs):
        detectors = await detector_types(runtime, namespace)
    else:
        detectors = frozenset()
    for spec, prefix in zip(specs, prefixes, strict=True):
        errors += fit_errors(spec, kinds, detectors, where, prefix)
    if errors:
        raise invalid(errors)
    return [cost_breakdown(spec, pricing_family(spec, kinds)) for spec in specs]


async def model_kinds(
    runtime: Runtime, namespace: str, names: list[str]
) -> dict[str, ModelKind | None]:
    found = await asyncio.gather(*(model_kind(runtime, namespace, name) for name in names))
    return dict(zip(names, found, strict=True))


async def detector_types(runtime: Runtime, namespace: str) -> frozenset[ControlType]:
    """The types of the detectors registered where the operator looks for them (a
    ModelCache of type detector, the tenant's namespace or the platform's)."""
    where = lookup_namespaces(namespace, runtime.platform.system_namespace)
    listed = await asyncio.gather(*(runtime.kube.list_models(name) for name in where))
    return frozenset(
        ControlType(body["spec"]["controlType"])
        for bodies in listed
        for body in bodies
        if body["spec"].get("type") == ModelType.DETECTOR and body["spec"].get("controlType")
    )


async def priced(
    runtime: Runtime, tenant: Tenant, specs: list[GenerationJobSpec], field_prefix: str = ""
) -> list[Breakdown]:
    """Each job's credits by feature, once it passes what a submission checks before
    anything is created (prompt length, the images are the tenant's, its content policy,
    its style and models): 422 naming the field otherwise. Creates and reserves nothing,
    so a quote and a submission of the same spec cost the same."""
    limits = runtime.settings.tier_limits[tenant.tier]
    refused = long_prompts(specs, tenant.tier, limits.prompt_max_length, field_prefix)
    refused += foreign_images(specs, runtime.platform, tenant.namespace, field_prefix)
    refused += denied_prompts(specs, await policy_of(runtime, tenant.namespace), field_prefix)
    if refused:
        raise invalid(refused)
    styled = await styled_specs(runtime, tenant.namespace, specs, field_prefix)
    return await prices(runtime, tenant.namespace, styled, field_prefix)


def total(breakdown: Breakdown) -> Decimal:
    return sum(breakdown.values(), Decimal(0))


async def submit(
    runtime: Runtime,
    principal: Principal,
    specs: list[GenerationJobSpec],
    names: list[str] | None,
    idempotency_key: str | None,
    field_prefix: str = "",
    tags: JobTags | None = None,
) -> Submitted:
    """Creates the jobs, all or none; `tags`: labels and annotations of each (a compatible
    door's)."""
    tenant = principal.tenant
    claim = Claim(idempotency_key, request_digest(specs, names)) if idempotency_key else None
    if claim is not None:
        replay = await replayed(runtime, tenant, claim)
        if replay is not None:
            return Submitted(replay, replayed=True)
    costs = [total(breakdown) for breakdown in await priced(runtime, tenant, specs, field_prefix)]
    tokens = ratelimits.policy(runtime.settings.tier_limits[tenant.tier], ratelimits.GENERATIONS)
    ratelimits.check(tokens, principal.generations_left, len(specs))
    ledger.affordable(principal.balance, sum(costs, Decimal(0)))
    job_names = names or [new_job_name() for _ in specs]
    try:
        jobs = await create_all(runtime, principal, specs, job_names, costs, claim, tokens, tags)
    except KeyTakenMeanwhileError:
        assert claim is not None
        replay = await replayed(runtime, tenant, claim)
        assert replay is not None
        return Submitted(replay, replayed=True)
    return Submitted(jobs, replayed=False)


async def create_all(
    runtime: Runtime,
    principal: Principal,
    specs: list[GenerationJobSpec],
    names: list[str],
    costs: list[Decimal],
    claim: Claim | None,
    tokens: BucketPolicy | None,
    tags: JobTags | None = None,
) -> list[JobPublic]:
    """Creates the GenerationJobs, then reserves their credits in one statement. With an
    Idempotency-Key, the key is claimed first in a transaction that commits with the
    reservation, so a concurrent retry waits for it and replays it. Any failure deletes
    the jobs already created. `tokens`: the tenant's generations bucket (None: no
    limit), a token per job taken by the reservation."""
    tenant = principal.tenant
    created: list[Body] = []
    try:
        if claim is None:
            created = await create_resources(runtime, tenant.namespace, specs, names, tags)
            async with runtime.pool.connection() as connection:
                await ledger.reserve(connection, tenant.id, reservations(created, costs), tokens)
        else:
            async with runtime.pool.connection() as connection, connection.transaction():
                if not await claim_key(connection, tenant.id, claim, names):
                    raise KeyTakenMeanwhileError
                created = await create_resources(runtime, tenant.namespace, specs, names, tags)
                await ledger.reserve(connection, tenant.id, reservations(created, costs), tokens)
    except BaseException:
        await asyncio.shield(delete_resources(runtime, created))
        raise
    return [JobPublic.from_resource(body, cost) for body, cost in zip(created, costs, strict=True)]


def reservations(created: list[Body], costs: list[Decimal]) -> list[ledger.Reservation]:
    return [
        ledger.Reservation(
            uid=body["metadata"]["uid"],
            namespace=body["metadata"]["namespace"],
            name=body["metadata"]["name"],
            spec=body["spec"],
            cost=cost,
            created_at=body["metadata"]["creationTimestamp"],
        )
        for body, cost in zip(created, costs, strict=True)
    ]


async def create_resources(
    runtime: Runtime,
    namespace: str,
    specs: list[GenerationJobSpec],
    names: list[str],
    tags: JobTags | None = None,
) -> list[Body]:
    """Creates the GenerationJobs concurrently; if one fails, those created are deleted."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(spec: GenerationJobSpec, name: str) -> Body:
        async with gate:
            return await runtime.kube.create_job(namespace, name, wire_spec(spec), tags)

    results = await asyncio.gather(
        *(create(spec, name) for spec, name in zip(specs, names, strict=True)),
        return_exceptions=True,
    )
    bodies = [result for result in results if isinstance(result, dict)]
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        await delete_resources(runtime, bodies)
        raise failures[0]
    return bodies


async def delete_resources(runtime: Runtime, bodies: list[Body]) -> None:
    for body in bodies:
        meta = body["metadata"]
        try:
            await runtime.kube.delete_job(meta["namespace"], meta["name"])
        except Exception:
            logger.exception("could not delete job %s/%s", meta["namespace"], meta["name"])


async def claim_key(
    connection: psycopg.AsyncConnection[Any],
    tenant_id: str,
    claim: Claim,
    names: list[str],
) -> bool:
    cursor = await connection.execute(
        "insert into idempotency_keys (tenant_id, key, request_hash, job_names)"
        " values (%s, %s, %s, %s) on conflict do nothing",
        (tenant_id, claim.key, claim.digest, Jsonb(names)),
    )
    return cursor.rowcount == 1


async def replayed(runtime: Runtime, tenant: Tenant, claim: Claim) -> list[JobPublic] | None:
    """The jobs an earlier request with this key created, or None when it is new."""
    async with runtime.pool.connection() as connection:
        cursor = await connection.execute(
            "select request_hash, job_names from idempotency_keys"
            " where tenant_id = %s and key = %s",
            (tenant.id, claim.key),
        )
        row = await cursor.fetchone()
    if row is None:
        return None
    if row[0] != claim.digest:
        raise InvalidError(
            "this Idempotency-Key was used with a different request body",
            errors=[
                FieldError(
                    field="Idempotency-Key",
                    rule="idempotency",
                    message="reuse a key only to retry the same request",
                )
            ],
        )
    found = await asyncio.gather(*(find_job(runtime, tenant, name) for name in row[1]))
    return [job for job in found if job is not None]
