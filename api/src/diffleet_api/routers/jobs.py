"""GenerationJobs through the front door: submit (one or a batch), read, list, cancel."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from diffleet_api import events, submission
from diffleet_api.deps import Member, RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES, NotFoundError
from diffleet_api.history import find_job, public_job
from diffleet_api.outputs import delete_outputs, presigned_outputs, presigned_source
from diffleet_api.queue_positions import with_queue_positions
from diffleet_api.schemas import (
    BatchRequest,
    BatchResult,
    JobList,
    JobPublic,
    JobSpecBody,
    Outputs,
    Quote,
)
from diffleet_core.resources.generation_job import NAME_PATTERN, JobPhase, ModelName
from diffleet_core.resources.text import Text

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)

IdempotencyKey = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Retrying with the same key returns the same job(s)",
    ),
]
JobId = Annotated[
    str, Path(max_length=253, pattern=NAME_PATTERN, description="The job's id (its name)")
]
JobName = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="The job's id: a Kubernetes object name (lowercase DNS subdomain)",
    ),
]
REPLAYED = "Idempotent-Replayed"
PAYMENT: dict[int | str, dict[str, Any]] = {
    402: PROBLEM_RESPONSES[401] | {"description": "Insufficient credits"}
}


NAME_TAKEN: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[422] | {"description": "A job with this `name` exists"}
}


@router.post("", status_code=status.HTTP_201_CREATED, responses=PAYMENT | NAME_TAKEN)
async def create_job(
    spec: JobSpecBody,
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    name: JobName = None,
) -> JobPublic:
    """Creates a GenerationJob in the tenant's namespace; the body is the job's spec."""
    names = [name] if name else None
    done = await submission.submit(runtime, principal, [spec], names, idempotency_key)
    job = done.jobs[0]
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if done.replayed:
        response.headers[REPLAYED] = "true"
    return job


@router.post(":batch", status_code=status.HTTP_201_CREATED, responses=PAYMENT)
async def create_batch(
    batch: BatchRequest,
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> BatchResult:
    """Creates up to 100 jobs, or none when any of them is invalid."""
    done = await submission.submit(
        runtime, principal, batch.jobs, None, idempotency_key, field_prefix="jobs"
    )
    if done.replayed:
        response.headers[REPLAYED] = "true"
    return BatchResult(items=done.jobs)


@router.post(":quote")
async def quote_job(spec: JobSpecBody, principal: Member, runtime: RuntimeDep) -> Quote:
    """The credits the job would cost and whether the balance covers them; creates and
    reserves nothing. The same checks as a submission (422 naming the field): member,
    as a quote is the first half of a submission and tells of the tenant's models,
    style presets and content policy only what submitting would."""
    [breakdown] = await submission.priced(runtime, principal.tenant, [spec])
    cost = submission.total(breakdown)
    return Quote(
        cost=cost,
        breakdown=breakdown,
        balance=principal.balance,
        affordable=principal.balance >= cost,
    )


@router.get("/{job_id}")
async def get_job(job_id: JobId, principal: Viewer, runtime: RuntimeDep) -> JobPublic:
    """The job, live; after its TTL has deleted it, from history."""
    job = await find_job(runtime, principal.tenant, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    [shown] = await with_queue_positions(runtime, [job])
    return shown


@router.get("")
async def list_jobs(
    principal: Viewer,
    runtime: RuntimeDep,
    phase: JobPhase | None = None,
    model: Annotated[
        ModelName | None,
        Query(description="Only jobs of this model (upscale.model for mode upscale)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Text | None, Query(max_length=4096)] = None,
) -> JobList:
    """The tenant's live jobs, in the API server's order (by name); a page may hold
    fewer than `limit` when filtered. Pass `nextCursor` back as `cursor` until it is
    null. Queued jobs carry their `queuePosition` (one history query for the page)."""
    page = await runtime.kube.list_jobs(principal.tenant.namespace, limit, cursor)
    items = [public_job(body) for body in page.items]
    matching = [
        job
        for job in items
        if (phase is None or job.status.phase == phase)
        and (model is None or (job.spec is not None and job.spec.primary_model == model))
    ]
    return JobList(
        items=await with_queue_positions(runtime, matching), next_cursor=page.next_cursor
    )


@router.delete("/{job_id}", status_code=status.HTTP_202_ACCEPTED)
async def cancel_job(job_id: JobId, principal: Member, runtime: RuntimeDep) -> JobPublic:
    """Cancels the job (sets spec.cancel); it stays visible, phase Cancelled."""
    namespace = principal.tenant.namespace
    body = await runtime.kube.get_job(namespace, job_id)
    if body is None:
        raise NotFoundError(f"no job {job_id!r}")
    phase = public_job(body).status.phase
    if phase is None or not phase.finished:
        body = await runtime.kube.cancel_job(namespace, job_id)
    return public_job(body)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def job_events(
    job_id: JobId,
    principal: Viewer,
    runtime: RuntimeDep,
    last_event_id: Annotated[
        Text | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after it")
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: `pending`, `queued` (with an estimated `position`), `scheduled`,
    `running`, `progress` (step, totalSteps, preview), then `succeeded`, `failed` or
    `cancelled` (the job), which ends the stream. Resumable with Last-Event-ID. A tenant
    holds at most its tier's number of streams at once (per API process): 429 beyond."""
    tenant = principal.tenant
    body = await runtime.kube.get_job(tenant.namespace, job_id)
    if body is None:
        raise NotFoundError(f"no job {job_id!r}")
    return await events.tenant_stream(runtime, tenant, body, events.open_stream, last_event_id)


@router.get(
    "/{job_id}/outputs",
    responses={409: PROBLEM_RESPONSES[422] | {"description": "Not succeeded, or deleted"}},
)
async def job_outputs(job_id: JobId, principal: Viewer, runtime: RuntimeDep) -> Outputs:
    """Presigned GET URLs of the job's images, valid for a few minutes."""
    job = await find_job(runtime, principal.tenant, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return Outputs(items=presigned_outputs(runtime, job), source_url=presigned_source(runtime, job))


@router.delete(
    "/{job_id}/outputs",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: PROBLEM_RESPONSES[422] | {"description": "Not finished"}},
)
async def delete_job_outputs(job_id: JobId, principal: Member, runtime: RuntimeDep) -> Response:
    """Deletes the finished job's output images (every object under its own key prefix)
    and records it (`outputsDeletedAt`); the job and its history stay. Again: 204."""
    tenant = principal.tenant
    body = await runtime.kube.get_job(tenant.namespace, job_id)
    job = public_job(body) if body is not None else await find_job(runtime, tenant, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    await delete_outputs(runtime, job, body)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
