"""Property-based tests of every operation of the committed OpenAPI document (schemathesis),
against an API process on 127.0.0.1, with a member's key: no server error, and every
answer conforms to the document (documented status, content type, headers, body schema).

1. Stateless: each operation on its own, positive and negative inputs. Its tenant owns no
   models, so no job is ever created (a submission stops at validation) and no event
   stream can find a job to follow forever.
2. Stateful: sequences of calls, a created job's id fed to the operations on one job
   (OpenAPI links added here: get, cancel, outputs). Its tenant owns a model of each
   type, which every submission names, so valid submissions create jobs (they stay
   Pending: no operator runs there); the event stream of such a job would never end, so
   that operation is left to the stateless part. Hypothesis replays scenarios and needs
   the same choices to lead to the same steps, so nothing may carry over from one
   scenario to the next: no job names or Idempotency-Keys (`repeatable`), no reachable
   rate limit (an API process of its own), credits that never run out.

Bounded: EXAMPLES per operation and EXAMPLES scenarios of up to STATEFUL_STEPS calls, no
deadline, no database of examples kept, derandomized (the same examples every run).
`make fuzz` raises EXAMPLES through DIFFLEET_FUZZ_EXAMPLES. The tenants are enterprise
tier so rate limits rarely cut a run short; a 429 is a documented answer when they do."""

import copy
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from diffleet_core.resources.generation_job import Tier
from tests.api.support import Api, ApiTenant, create_tenant, model_cache, spawn_api
from tests.conftest import delete_namespace
from tests.support.stack import ROOT, Kubectl

EXAMPLES = int(os.environ.get("DIFFLEET_FUZZ_EXAMPLES", "20"))
STATEFUL_STEPS = 8
MODEL = "sd15-fuzz"
# The stateful tenant's model of each other type a job may name.
TYPED_MODELS = {
    model_type: f"{model_type}-fuzz"
    for model_type in ("lora", "controlnet", "embedding", "vae", "upscaler", "restorer")
}
NESTED_MODELS = {"controlNet": "controlnet", "upscale": "upscaler", "restoreFaces": "restorer"}
UNLIMITED = json.dumps(
    {Tier.ENTERPRISE.value: {"requests_per_minute": 10**9, "generations_per_hour": 10**9}}
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STATEFUL_STEPS,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
DOCUMENT = json.loads((ROOT / "api" / "openapi.json").read_text())
ON_A_JOB = {
    "GetJob": "get_job_v1_jobs__job_id__get",
    "CancelJob": "cancel_job_v1_jobs__job_id__delete",
    "JobOutputs": "job_outputs_v1_jobs__job_id__outputs_get",
}


def linked(document: dict[str, Any]) -> dict[str, Any]:
    """The document with links from each created job to the operations on one job."""
    linked = copy.deepcopy(document)
    created = {"/v1/jobs": "$response.body#/id", "/v1/jobs:batch": "$response.body#/items/0/id"}
    for path, job_id in created.items():
        linked["paths"][path]["post"]["responses"]["201"]["links"] = {
            name: {"operationId": operation, "parameters": {"job_id": job_id}}
            for name, operation in ON_A_JOB.items()
        }
    return linked


schema = schemathesis.openapi.from_dict(DOCUMENT)
# The doors (OpenAI's, Automatic1111's) answer once their job finishes, which no operator
# runs here: the stateless part covers them, a request that would create a job is refused
# there first (its tenant owns no model). Event streams last as long as their job or
# training.
workflows = (
    schemathesis.openapi.from_dict(linked(DOCUMENT))
    .exclude(path="/v1/jobs/{job_id}/events")
    .exclude(path="/v1/trainings/{training_id}/events")
    .exclude(path_regex=r"^/(v1/images|sdapi)/")
)


@contextmanager
def fuzz_tenant(kubectl: Kubectl) -> Iterator[ApiTenant]:
    """An enterprise tenant with a namespace of its own, deleted afterwards."""
    tenant = create_tenant(f"fuzz-{uuid.uuid4().hex[:8]}", Tier.ENTERPRISE, credits="1000000000")
    kubectl.run("create", "namespace", tenant.namespace, check=False)
    yield tenant
    delete_namespace(kubectl, tenant.namespace)


@pytest.fixture(scope="module")
def stateless_tenant(api: Api, kubectl: Kubectl) -> Iterator[ApiTenant]:
    with fuzz_tenant(kubectl) as tenant:
        yield tenant


@pytest.fixture
def stateful_tenant(kubectl: Kubectl) -> Iterator[ApiTenant]:
    with fuzz_tenant(kubectl) as tenant:
        model_cache(kubectl, tenant.namespace, MODEL)
        for model_type, name in TYPED_MODELS.items():
            family = None if model_type in ("upscaler", "restorer") else "sd15"
            # A ControlNet says what its conditioning image shows (the CRD requires it).
            fields = {"controlType": "canny"} if model_type == "controlnet" else {}
            model_cache(kubectl, tenant.namespace, name, family, model_type=model_type, **fields)
        yield tenant


@pytest.fixture
def unlimited_api(stateful_tenant: ApiTenant) -> Iterator[Api]:
    """An API process whose enterprise tier has no rate limit that a run could reach: a
    429 in one scenario would change what the next can do (see `repeatable`)."""
    [started] = spawn_api(stateful_tenant.namespace, watcher="false", tier_limits=UNLIMITED)
    yield started
    started.process.stop()


def authorized(tenant: ApiTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.member}"}


@schema.parametrize()
@BOUNDED
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], api: Api, stateless_tenant: ApiTenant
) -> None:
    assert api.url.startswith("http://127.0.0.1:")
    case.call_and_validate(
        base_url=api.url, headers=authorized(stateless_tenant), checks=CHECKS, timeout=30
    )


def repeatable(case: schemathesis.Case[Any]) -> None:
    """Leaves out what makes an answer depend on an earlier scenario (a job name or an
    Idempotency-Key used before: 409 or a replay instead of 201). Hypothesis replays
    scenarios and requires that the same choices lead to the same steps; the stateless
    part covers both."""
    if case.query:
        case.query.pop("name", None)
    if case.headers:
        case.headers.pop("Idempotency-Key", None)


def submittable(case: schemathesis.Case[Any]) -> None:
    """Points every model a submission names at the tenant's model of that field's type
    (TYPED_MODELS) and gives it a prompt where its mode needs one (the schema's default is
    empty), so that an otherwise valid one creates a job."""
    if case.method != "POST" or not isinstance(case.body, dict):
        return
    specs = case.body.get("jobs") if case.path == "/v1/jobs:batch" else [case.body]
    for spec in specs if isinstance(specs, list) else []:
        if isinstance(spec, dict):
            submittable_spec(spec)


def submittable_spec(spec: dict[str, Any]) -> None:
    if spec.get("mode") != "upscale":  # `model` is optional in the schema for that mode
        spec["model"] = MODEL
    if spec.get("mode") not in ("inpaint", "upscale") and not spec.get("prompt"):
        spec["prompt"] = "a fuzzed job"
    if "vae" in spec:
        spec["vae"] = TYPED_MODELS["vae"]
    embeddings = spec.get("embeddings")
    if isinstance(embeddings, list):
        spec["embeddings"] = [TYPED_MODELS["embedding"]] * len(embeddings)
    loras = spec.get("loras")
    nested = [(lora, "lora") for lora in loras] if isinstance(loras, list) else []
    nested += [(spec.get(field), model_type) for field, model_type in NESTED_MODELS.items()]
    for holder, model_type in nested:
        if isinstance(holder, dict) and "model" in holder:
            holder["model"] = TYPED_MODELS[model_type]


def test_workflows_on_created_jobs_answer_as_documented(
    unlimited_api: Api, stateful_tenant: ApiTenant
) -> None:
    calls = {"base_url": unlimited_api.url, "headers": authorized(stateful_tenant), "timeout": 30}
    answered: Counter[tuple[str, str, int]] = Counter()

    class Workflow(workflows.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case[Any]) -> None:
            repeatable(case)
            submittable(case)

        def after_call(self, response: Any, case: schemathesis.Case[Any]) -> None:
            super().after_call(response, case)
            answered[(case.method, case.path, response.status_code)] += 1

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return calls

        def validate_response(
            self, response: Any, case: schemathesis.Case[Any], *_: Any, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Workflow.run(settings=BOUNDED)
    # Not vacuous: jobs were created, and a created job was then read through a link.
    assert answered[("POST", "/v1/jobs", 201)] + answered[("POST", "/v1/jobs:batch", 201)] > 0
    assert answered[("GET", "/v1/jobs/{job_id}", 200)] > 0, answered
