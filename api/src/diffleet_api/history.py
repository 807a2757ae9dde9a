"""Job history in PostgreSQL: every job's request, last status and outputs, kept after
the GenerationJob's TTL has deleted it. Reads prefer the live resource.

What is stored is `storable`: PostgreSQL's text and jsonb refuse U+0000 and a lone
surrogate cannot be encoded, so a resource stored with kubectl that holds such characters
(or any other the spec refuses, so that the history reads back) is recorded with each
one escaped as its JSON spelling, six characters (`\\u0000`), rather than not at all.

Every read of a job (get, list, cancel, events, history) shows it through `public_job`:
escaped the same way, and shown even when the models refuse what is stored (a job
stored before a rule existed, or past validation): never a 5xx, never hiding the job.
"""

from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from diffleet_api.errors import FieldError, field_errors
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_api.tenants import Tenant
from diffleet_core.resources.generation_job import GenerationJobSpec, GenerationJobStatus
from diffleet_core.resources.text import REFUSED

Body = dict[str, Any]
Part = TypeVar("Part", bound=BaseModel)  # a spec or a status (a job's, a training's)


def storable(value: Any) -> Any:
    """`value` (decoded JSON) with every refused character of its strings, keys included,
    escaped (U+0000 becomes the six characters `\\u0000`)."""
    if isinstance(value, str):
        return REFUSED.sub(lambda found: f"\\u{ord(found.group()):04x}", value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


def document(value: Any) -> Jsonb:
    """A resource's spec or status as a jsonb parameter: storable, an object."""
    return Jsonb(storable(value) if isinstance(value, dict) else {})


# A job's row, from the watcher: the request and creation time once, the status and
# phase each time; `quarantine_reason`, once set, is kept.
RECORD = """
insert into jobs (uid, tenant_id, namespace, name, spec, status, phase, created_at,
    finished_at, quarantine_reason)
values (%(uid)s, (select id from tenants where namespace = %(namespace)s), %(namespace)s,
    %(name)s, %(spec)s, %(status)s, %(phase)s, %(created)s,
    case when %(finished)s then now() end, %(reason)s)
on conflict (uid) do update set status = excluded.status, phase = excluded.phase,
    finished_at = coalesce(jobs.finished_at, excluded.finished_at),
    quarantine_reason = coalesce(excluded.quarantine_reason, jobs.quarantine_reason)
"""


async def record(
    connection: psycopg.AsyncConnection[Any],
    body: Body,
    phase: str,
    finished: bool,
    quarantine_reason: str | None = None,
) -> None:
    """Records the job `body` at `phase`; with a `quarantine_reason` when the watcher
    could not handle it (isolation.py)."""
    meta = body["metadata"]
    await connection.execute(
        RECORD,
        {
            "uid": meta["uid"],
            "namespace": meta["namespace"],
            "name": meta["name"],
            "spec": document(body.get("spec")),
            "status": document(body.get("status")),
            "phase": storable(phase),
            "created": meta["creationTimestamp"],
            "finished": finished,
            "reason": quarantine_reason,
        },
    )


async def quarantined(
    connection: psycopg.AsyncConnection[Any], namespace: str, name: str, reason: str
) -> None:
    """Says why the watcher set the abandoned job `namespace`/`name` aside."""
    await connection.execute(
        "update jobs set quarantine_reason = %s"
        " where namespace = %s and name = %s and credits = 'abandoned'",
        (reason, namespace, name),
    )


async def find_job(runtime: Runtime, tenant: Tenant, name: str) -> JobPublic | None:
    """The tenant's job by name: the live GenerationJob, else its history."""
    body = await runtime.kube.get_job(tenant.namespace, name)
    async with runtime.pool.connection() as connection:
        cursor = connection.cursor(row_factory=dict_row)
        if body is not None:
            await cursor.execute(
                "select cost, outputs_deleted_at from jobs where uid = %s",
                (body["metadata"]["uid"],),
            )
            row = await cursor.fetchone()
            if row is None:
                return public_job(body)
            job = public_job(body, row["cost"])
            return job.model_copy(update={"outputs_deleted_at": row["outputs_deleted_at"]})
        await cursor.execute(
            "select uid, namespace, name, spec, status, created_at, cost, outputs_deleted_at"
            " from jobs where namespace = %s and name = %s order by created_at desc limit 1",
            (tenant.namespace, name),
        )
        row = await cursor.fetchone()
    return from_history(row) if row else None


def from_history(row: dict[str, Any]) -> JobPublic:
    meta = {key: row[key] for key in ("name", "uid", "namespace")}
    body = {
        "metadata": meta | {"creationTimestamp": row["created_at"]},
        "spec": row["spec"],
        "status": row["status"],
    }
    job = public_job(body, row["cost"])
    return job.model_copy(update={"outputs_deleted_at": row.get("outputs_deleted_at")})


def public_job(body: Body, cost: Decimal | None = None) -> JobPublic:
    """The job `body` (a GenerationJob, or one rebuilt from history) as the API shows it:
    storable, and each field the models still refuse left out and named in
    `invalidFields`; a spec that cannot be read even so (a required field or a
    cross-field rule broken) is null."""
    stored = storable(body)
    meta = stored["metadata"]
    spec, spec_errors = readable(GenerationJobSpec, stored.get("spec"), "spec")
    status, status_errors = readable(GenerationJobStatus, stored.get("status") or {}, "status")
    return JobPublic(
        id=meta["name"],
        uid=meta["uid"],
        namespace=meta["namespace"],
        spec=spec,
        status=status or GenerationJobStatus(),
        created_at=meta["creationTimestamp"],
        cost=cost,
        invalid_fields=spec_errors + status_errors,
    )


def readable(model: type[Part], value: Any, name: str) -> tuple[Part | None, list[FieldError]]:
    """`value` as `model`, less each top-level field that `model` refuses, and the errors
    of those fields (named under `name`); None when it cannot be read even so."""
    errors: list[FieldError] = []
    left_out: set[Any] = set()
    while True:
        try:
            return model.model_validate(value), errors
        except ValidationError as error:
            # A field left out is reported once, for what it held, not as now missing.
            found = [
                detail
                for detail in error.errors()
                if not detail["loc"] or detail["loc"][0] not in left_out
            ]
            errors += errors_under(name, found)
            failing = {detail["loc"][0] for detail in found if detail["loc"]}
        if not isinstance(value, dict) or not failing & value.keys():
            return None, errors
        left_out |= failing
        value = {key: item for key, item in value.items() if key not in left_out}


def errors_under(name: str, details: list[ErrorDetails]) -> list[FieldError]:
    """pydantic's errors of the part `name` of a job, as fields of the job."""
    return field_errors([{**detail, "loc": (name, *detail["loc"])} for detail in details])
