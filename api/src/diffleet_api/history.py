"""Job history in PostgreSQL: every job's request, last status and outputs, kept after
the GenerationJob's TTL has deleted it. Reads prefer the live resource."""

from typing import Any

from psycopg.rows import dict_row

from diffleet_api.runtime import Runtime
from diffleet_api.schemas import JobPublic
from diffleet_api.tenants import Tenant
from diffleet_core.resources.generation_job import GenerationJobSpec, GenerationJobStatus


async def find_job(runtime: Runtime, tenant: Tenant, name: str) -> JobPublic | None:
    """The tenant's job by name: the live GenerationJob, else its history."""
    body = await runtime.kube.get_job(tenant.namespace, name)
    async with runtime.pool.connection() as connection:
        cursor = connection.cursor(row_factory=dict_row)
        if body is not None:
            await cursor.execute("select cost from jobs where uid = %s", (body["metadata"]["uid"],))
            row = await cursor.fetchone()
            return JobPublic.from_resource(body, row["cost"] if row else None)
        await cursor.execute(
            "select uid, namespace, name, spec, status, created_at, cost from jobs"
            " where namespace = %s and name = %s order by created_at desc limit 1",
            (tenant.namespace, name),
        )
        row = await cursor.fetchone()
    return from_history(row) if row else None


def from_history(row: dict[str, Any]) -> JobPublic:
    return JobPublic(
        id=row["name"],
        uid=row["uid"],
        namespace=row["namespace"],
        spec=GenerationJobSpec.model_validate(row["spec"]),
        status=GenerationJobStatus.model_validate(row["status"]),
        created_at=row["created_at"],
        cost=row["cost"],
    )
