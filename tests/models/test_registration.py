"""Registration against the local stack: the digests are the ones the operator computes,
a second run changes nothing, and pickle models are refused."""

from pathlib import Path
from typing import Any

import pytest

from diffleet_core import SYSTEM_NAMESPACE
from diffleet_core.resources.conditions import Reason
from diffleet_core.settings import get_settings
from diffleet_core.storage import S3Location
from diffleet_operator.verification import Refused, Verified, verify
from hack.models.registry import s3_client
from tests.support.models import PickleLayout, ensure_models, register_pickle_model
from tests.support.stack import Kubectl

pytestmark = pytest.mark.stack


def objects_under(prefixes: list[str]) -> dict[str, tuple[str, str]]:
    """ETag and last-modified time of every object under the prefixes."""
    s3 = s3_client()
    bucket = get_settings().buckets.models
    found = {}
    for prefix in prefixes:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = (item["ETag"], str(item["LastModified"]))
    return found


def model_caches(kubectl: Kubectl, names: list[str]) -> dict[str, Any]:
    """Spec and generation (which only a spec change moves) of each ModelCache."""
    result = {}
    for name in names:
        body = kubectl.json("get", "modelcache", name, "-n", SYSTEM_NAMESPACE)
        result[name] = (body["spec"], body["metadata"]["generation"])
    return result


def prefix_of(source: str) -> str:
    key = S3Location.parse(source).key
    return key if key.endswith("/") else key.rsplit("/", 1)[0] + "/"


def test_second_registration_uploads_and_changes_nothing(
    local_stack: dict[str, str], kubectl: Kubectl
) -> None:
    first = ensure_models()
    prefixes = [prefix_of(model.source) for model in first.values()]
    objects, caches = objects_under(prefixes), model_caches(kubectl, list(first))
    assert objects, "nothing was uploaded"
    second = ensure_models()
    assert second == first
    assert objects_under(prefixes) == objects
    assert model_caches(kubectl, list(first)) == caches


def test_registered_digests_are_what_the_operator_verifies(local_stack: dict[str, str]) -> None:
    s3 = s3_client()
    for name, model in ensure_models().items():
        result = verify(model.spec, s3)
        assert isinstance(result, Verified), f"{name}: {result}"
        assert result.digest == model.digest, name
        assert result.size_bytes == model.spec.size_bytes, name
        assert model.spec.vram_gib <= 1.0, name


@pytest.mark.parametrize("layout", list(PickleLayout))
def test_pickle_models_are_refused(
    local_stack: dict[str, str], namespace: str, tmp_path: Path, layout: PickleLayout
) -> None:
    model = register_pickle_model(namespace, f"pickled-{layout.value}", tmp_path, layout)
    result = verify(model.spec, s3_client())
    assert isinstance(result, Refused)
    assert result.reason is Reason.UNSAFE_FORMAT
