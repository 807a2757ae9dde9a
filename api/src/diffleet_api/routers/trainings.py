"""TrainingJobs through the front door: create (with its credits), read, list, cancel,
and follow (SSE)."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import StreamingResponse

from diffleet_api import events, training_events, trainings
from diffleet_api.deps import Member, RuntimeDep, Viewer
from diffleet_api.errors import PROBLEM_RESPONSES, NotFoundError
from diffleet_api.routers.jobs import PAYMENT
from diffleet_api.schemas import Quote, TrainingList, TrainingPublic, TrainingSpecBody
from diffleet_core.resources.generation_job import NAME_PATTERN
from diffleet_core.resources.text import Text
from diffleet_core.resources.training_job import TrainingPhase

router = APIRouter(prefix="/v1/trainings", tags=["trainings"], responses=PROBLEM_RESPONSES)

TrainingId = Annotated[
    str, Path(max_length=253, pattern=NAME_PATTERN, description="The training's id (its name)")
]
TrainingName = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description="The training's id: a Kubernetes object name (lowercase DNS subdomain);"
        " default tj-<random>",
    ),
]
REFUSALS: dict[int | str, dict[str, Any]] = {
    409: PROBLEM_RESPONSES[422] | {"description": "A training with this `name` exists"},
    403: PROBLEM_RESPONSES[422] | {"description": "The tenant's tier allows no trainings"},
    429: PROBLEM_RESPONSES[422]
    | {"description": "The tier's concurrent trainings are running, or too many requests"},
}


@router.post("", status_code=status.HTTP_201_CREATED, responses=PAYMENT | REFUSALS)
async def create_training(
    spec: TrainingSpecBody,
    principal: Member,
    runtime: RuntimeDep,
    response: Response,
    name: TrainingName = None,
) -> TrainingPublic:
    """Creates a TrainingJob in the tenant's namespace; the body is its spec. Its credits
    (steps x (resolution/512)² x batchSize x the step price) are reserved now, settled
    when it succeeds and refunded when it fails or is cancelled."""
    training = await trainings.submit(runtime, principal.tenant, spec, name)
    response.headers["Location"] = f"/v1/trainings/{training.id}"
    return training


@router.post(":quote", responses={403: REFUSALS[403]})
async def quote_training(spec: TrainingSpecBody, principal: Member, runtime: RuntimeDep) -> Quote:
    """The credits the training would reserve now (`breakdown`: `training`) and whether
    the balance covers them; creates and reserves nothing. The submission's checks: 403
    for a tier without trainings, 422 naming the field (dataset, baseModel, an
    output.name taken). Member, as for jobs' quotes."""
    trainings.allowed_trainings(runtime, principal.tenant)
    cost = await trainings.priced(runtime, principal.tenant, spec, "")
    return Quote(
        cost=cost,
        breakdown={"training": cost},
        balance=principal.balance,
        affordable=principal.balance >= cost,
    )


@router.get("/{training_id}")
async def get_training(
    training_id: TrainingId, principal: Viewer, runtime: RuntimeDep
) -> TrainingPublic:
    body = await runtime.kube.get_training(principal.tenant.namespace, training_id)
    if body is None:
        raise NotFoundError(f"no training {training_id!r}")
    costs = await trainings.costs_of(runtime, [body["metadata"]["uid"]])
    return trainings.public_training(body, costs.get(body["metadata"]["uid"]))


@router.get("")
async def list_trainings(
    principal: Viewer,
    runtime: RuntimeDep,
    phase: TrainingPhase | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[Text | None, Query(max_length=4096)] = None,
) -> TrainingList:
    """The tenant's trainings, oldest first; a page may hold fewer than `limit` when
    filtered. Pass `nextCursor` back as `cursor` until it is null."""
    page = await runtime.kube.list_trainings(principal.tenant.namespace, limit, cursor)
    costs = await trainings.costs_of(runtime, [body["metadata"]["uid"] for body in page.items])
    items = [
        trainings.public_training(body, costs.get(body["metadata"]["uid"])) for body in page.items
    ]
    matching = [item for item in items if phase is None or item.status.phase == phase]
    return TrainingList(items=matching, next_cursor=page.next_cursor)


@router.delete("/{training_id}", status_code=status.HTTP_202_ACCEPTED)
async def cancel_training(
    training_id: TrainingId, principal: Member, runtime: RuntimeDep
) -> TrainingPublic:
    """Cancels the training (sets spec.cancel): it stops within a step, keeps its
    checkpoints and ends Cancelled; its credits are refunded. A finished one is left
    as it is."""
    namespace = principal.tenant.namespace
    body = await runtime.kube.get_training(namespace, training_id)
    if body is None:
        raise NotFoundError(f"no training {training_id!r}")
    phase = trainings.public_training(body).status.phase
    if phase is None or not phase.finished:
        body = await runtime.kube.cancel_training(namespace, training_id)
    costs = await trainings.costs_of(runtime, [body["metadata"]["uid"]])
    return trainings.public_training(body, costs.get(body["metadata"]["uid"]))


@router.get(
    "/{training_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def training_events_stream(
    training_id: TrainingId,
    principal: Viewer,
    runtime: RuntimeDep,
    last_event_id: Annotated[
        Text | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after it")
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: `pending`, `queued`, `running` (the status), `progress` (step,
    totalSteps, loss, stepsRun, etaSeconds), `checkpoint` and `validation` (with a
    presigned url), then `succeeded`, `failed` or `cancelled` (the training), which ends
    the stream. Resumable with Last-Event-ID. The streams count against the tier's event
    streams with the jobs' (429 beyond)."""
    tenant = principal.tenant
    body = await runtime.kube.get_training(tenant.namespace, training_id)
    if body is None:
        raise NotFoundError(f"no training {training_id!r}")
    return await events.tenant_stream(
        runtime, tenant, body, training_events.open_stream, last_event_id
    )
