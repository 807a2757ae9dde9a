"""The committed OpenAPI document is the one the code serves."""

from diffleet_api.openapi import render
from tests.support.stack import ROOT


def test_committed_openapi_is_current() -> None:
    committed = (ROOT / "api" / "openapi.json").read_text()
    assert committed == render(), "api/openapi.json is stale: run `make openapi`"
