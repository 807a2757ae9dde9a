"""Property-based tests of every operation of the committed OpenAPI document (schemathesis),
positive and negative inputs, against an API process on 127.0.0.1: no server error, and
every answer conforms to the document (status, content type, headers, body schema).

Bounded: EXAMPLES per operation (a few hundred requests in all), no deadline, no database
of examples kept, derandomized (the same examples every run). The tenant is enterprise
tier so rate limits do not cut the run short, and owns no models, so no job is ever
created (every submission stops at validation)."""

import uuid
from collections.abc import Iterator
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
from tests.api.support import Api, ApiTenant, create_tenant
from tests.conftest import delete_namespace
from tests.support.stack import ROOT, Kubectl

EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_path(ROOT / "api" / "openapi.json")


@pytest.fixture(scope="module")
def fuzz_tenant(api: Api, kubectl: Kubectl) -> Iterator[ApiTenant]:
    tenant = create_tenant(f"fuzz-{uuid.uuid4().hex[:8]}", Tier.ENTERPRISE)
    kubectl.run("create", "namespace", tenant.namespace, check=False)
    yield tenant
    delete_namespace(kubectl, tenant.namespace)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_no_schema_violation(
    case: schemathesis.Case[Any], api: Api, fuzz_tenant: ApiTenant
) -> None:
    assert api.url.startswith("http://127.0.0.1:")
    case.call_and_validate(
        base_url=api.url,
        headers={"Authorization": f"Bearer {fuzz_tenant.member}"},
        checks=CHECKS,
        timeout=30,
    )
