"""Submitting TrainingJobs: check what the operator's admission would refuse and what is
the tenant's (its dataset, the base model, the output's name), price the training, and
create it in one transaction with its reservation.

The transaction locks the tenant's row, counts its unfinished trainings against the
tier's limit, checks the balance, creates the TrainingJob, then debits the credits and
writes the training's row and its `reserve` ledger row: a refusal or a failed create
leaves nothing behind, and a tenant's concurrent submissions are counted one after the
other. A TrainingJob created whose transaction does not commit (the replica died) is
cancelled by the training watcher (training_watcher.py), which also settles or refunds
the credits when the training ends.
"""

import asyncio
import logging
from decimal import Decimal
from typing import Any

import psycopg

from diffleet_api.errors import (
    FieldError,
    ForbiddenError,
    RateLimitedError,
    UnavailableError,
    invalid,
)
from diffleet_api.history import readable, storable
from diffleet_api.kube import Body
from diffleet_api.ledger import short
from diffleet_api.objects import s3_call
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import TrainingPublic
from diffleet_api.submission import model_kind, new_job_name
from diffleet_api.tenants import Tenant
from diffleet_core.datasets import (
    DatasetLimits,
    DatasetReason,
    DatasetRefusedError,
    check_tenant_scope,
    select_examples,
)
from diffleet_core.pricing import training_cost
from diffleet_core.resources.model_cache import ModelType
from diffleet_core.resources.training_job import (
    TRAINED_BY_LABEL,
    TrainingJobSpec,
    TrainingJobStatus,
)

logger = logging.getLogger(__name__)

NAME_PREFIX = "tj-"
# A dataset's listing is read in pages of S3's largest size.
LIST_PAGE = 1000


def new_training_name() -> str:
    """`tj-` and 10 random letters or digits (drawn as a job's name is)."""
    return NAME_PREFIX + new_job_name().partition("-")[2]


def wire_spec(spec: TrainingJobSpec) -> Body:
    body: Body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return body


def public_training(body: Body, cost: Decimal | None = None) -> TrainingPublic:
    """The TrainingJob as the API shows it; fields its models refuse are left out and
    named in `invalidFields` (as history.public_job does for jobs)."""
    stored = storable(body)
    meta = stored["metadata"]
    spec, spec_errors = readable(TrainingJobSpec, stored.get("spec"), "spec")
    status, status_errors = readable(TrainingJobStatus, stored.get("status") or {}, "status")
    return TrainingPublic(
        id=meta["name"],
        uid=meta["uid"],
        namespace=meta["namespace"],
        spec=spec,
        status=status or TrainingJobStatus(),
        created_at=meta["creationTimestamp"],
        cost=cost,
        invalid_fields=spec_errors + status_errors,
    )


async def costs_of(runtime: Runtime, uids: list[str]) -> dict[str, Decimal]:
    """The credits reserved for each of these trainings that the API created."""
    async with runtime.pool.connection() as connection:
        cursor = await connection.execute(
            "select uid, cost from trainings where uid = any(%s)", (uids,)
        )
        return {uid: cost for uid, cost in await cursor.fetchall()}


# ------------------------------------------------------------ checks before creating


async def dataset_errors(runtime: Runtime, namespace: str, uri: str) -> list[FieldError]:
    """The dataset's refusal by core.datasets' rules (the operator's, from the listing),
    as the field `dataset` with the DatasetReason as its rule."""
    try:
        location = check_tenant_scope(uri, namespace, runtime.platform.buckets.uploads)
        objects = await listing(runtime, location.bucket, location.key)
        if not objects:
            raise DatasetRefusedError(
                DatasetReason.NOT_FOUND,
                f"nothing is stored under {uri!r}: upload it with POST /v1/datasets/{{name}}",
            )
        select_examples(objects, location.key, DatasetLimits())
    except DatasetRefusedError as refused:
        return [FieldError(field="dataset", rule=refused.reason.value, message=refused.message)]
    return []


async def listing(runtime: Runtime, bucket: str, prefix: str) -> dict[str, int]:
    """Every object under `prefix`: key to size in bytes."""
    objects: dict[str, int] = {}
    token: dict[str, str] = {}
    while True:
        page = await s3_call(
            f"list {prefix}",
            runtime.s3.list_objects_v2,
            Bucket=bucket,
            Prefix=prefix,
            MaxKeys=LIST_PAGE,
            **token,
        )
        objects |= {item["Key"]: item["Size"] for item in page.get("Contents", [])}
        if not page.get("IsTruncated"):
            return objects
        token = {"ContinuationToken": page["NextContinuationToken"]}


async def model_errors(
    runtime: Runtime, namespace: str, spec: TrainingJobSpec, name: str
) -> list[FieldError]:
    """baseModel must be a checkpoint the operator finds; output.name must not be a
    ModelCache of the namespace already, unless this training made it."""
    base, output = await asyncio.gather(
        model_kind(runtime, namespace, spec.base_model),
        runtime.kube.get_model(namespace, spec.output.name),
    )
    errors = []
    where = f"{namespace!r} or {runtime.platform.system_namespace!r}"
    if base is None:
        errors.append(
            FieldError(
                field="baseModel",
                rule="exists",
                message=f"no ModelCache {spec.base_model!r} in {where}",
            )
        )
    elif base.type != ModelType.CHECKPOINT:
        errors.append(
            FieldError(
                field="baseModel",
                rule="modelType",
                message=f"{spec.base_model!r} is a {base.type.value}; training needs a checkpoint",
            )
        )
    made_by = ((output or {}).get("metadata", {}).get("labels") or {}).get(TRAINED_BY_LABEL)
    if output is not None and made_by != name:
        errors.append(
            FieldError(
                field="output.name",
                rule="unique",
                message=f"ModelCache {spec.output.name!r} exists in {namespace!r}; name a new one",
            )
        )
    return errors


def allowed_trainings(runtime: Runtime, tenant: Tenant) -> int:
    """The tier's limit of unfinished trainings; 403 for a tier that has none."""
    limit = runtime.settings.tier_limits[tenant.tier].concurrent_trainings
    if limit == 0:
        raise ForbiddenError(
            f"the {tenant.tier.value} tier allows no trainings (concurrentTrainings 0);"
            " a higher tier does"
        )
    return limit


# ------------------------------------------------------------ creating


async def submit(
    runtime: Runtime, tenant: Tenant, spec: TrainingJobSpec, name: str | None
) -> TrainingPublic:
    """Creates the training with its reservation, or refuses it: 403 (tier without
    trainings), 422 (the field named), 402 (credits), 429 (the tier's concurrent
    trainings), 409 (a TrainingJob of that name)."""
    limit = allowed_trainings(runtime, tenant)
    name = name or new_training_name()
    cost = await priced(runtime, tenant, spec, name)
    async with runtime.pool.connection() as connection, connection.transaction():
        balance = await hold_tenant(connection, tenant, limit)
        if balance < cost:
            raise short(cost, balance)
        body = await runtime.kube.create_training(tenant.namespace, name, wire_spec(spec))
        try:
            await reserve(connection, tenant.id, body, cost)
        except BaseException:
            await asyncio.shield(cancel_unpaid(runtime, tenant.namespace, name))
            raise
    return public_training(body, cost)


async def priced(runtime: Runtime, tenant: Tenant, spec: TrainingJobSpec, name: str) -> Decimal:
    """The training's credits, once its dataset and models pass the submission's checks
    (422 naming the field); creates and reserves nothing (a quote's, then a submission's)."""
    errors, more = await asyncio.gather(
        dataset_errors(runtime, tenant.namespace, spec.dataset),
        model_errors(runtime, tenant.namespace, spec, name),
    )
    if errors + more:
        raise invalid(errors + more)
    return training_cost(spec, runtime.settings.training_step_price)


async def cancel_unpaid(runtime: Runtime, namespace: str, name: str) -> None:
    """Cancels a training whose reservation failed (the API may not delete trainings);
    if that fails too, the training watcher cancels it once abandoned."""
    try:
        await runtime.kube.cancel_training(namespace, name)
    except Exception:
        logger.exception("could not cancel unpaid training %s/%s", namespace, name)


async def hold_tenant(
    connection: psycopg.AsyncConnection[Any], tenant: Tenant, limit: int
) -> Decimal:
    """Locks the tenant's row until the transaction ends and returns its balance; 429 when
    it has `limit` unfinished trainings already."""
    cursor = await connection.execute(
        "select balance from tenants where id = %s for update", (tenant.id,)
    )
    row = await cursor.fetchone()
    assert row is not None, "an authenticated tenant exists"
    cursor = await connection.execute(
        "select count(*) from trainings where tenant_id = %s and credits = 'reserved'",
        (tenant.id,),
    )
    counted = await cursor.fetchone()
    unfinished = counted[0] if counted else 0
    if unfinished >= limit:
        raise RateLimitedError(
            f"{unfinished} trainings of this tenant are unfinished, the most its"
            f" {tenant.tier.value} tier allows (concurrentTrainings {limit}); wait for one"
            " to end or cancel one"
        )
    balance: Decimal = row[0]
    return balance


async def reserve(
    connection: psycopg.AsyncConnection[Any], tenant_id: str, body: Body, cost: Decimal
) -> None:
    """Debits the credits and records the training and its `reserve` ledger row; 503 when
    the training watcher abandoned the training first (the commit came too late)."""
    meta = body["metadata"]
    cursor = await connection.execute(
        "insert into trainings (uid, tenant_id, namespace, name, cost, credits, created_at)"
        " values (%s, %s, %s, %s, %s, 'reserved', %s) on conflict (uid) do nothing",
        (meta["uid"], tenant_id, meta["namespace"], meta["name"], cost,
         meta["creationTimestamp"]),
    )  # fmt: skip
    if cursor.rowcount != 1:
        raise UnavailableError(
            f"training {meta['name']!r} took too long to create and was cancelled; retry"
        )
    await connection.execute(
        "update tenants set balance = balance - %s where id = %s", (cost, tenant_id)
    )
    await connection.execute(
        "insert into ledger (tenant_id, kind, amount, job_uid, note)"
        " values (%s, 'reserve', %s, %s, %s)",
        (tenant_id, -cost, meta["uid"], f"training {meta['name']}"),
    )
