"""fleet.py's pure parts: a worker's Lease and a GPUPool as GET /v1/fleet shows them."""

import json
from datetime import UTC, datetime

from diffleet_api.fleet import pool, worker

INVENTORY = {"workerId": "w-1", "pool": "a100", "vramGiB": 80, "concurrency": 4,
             "jobsInFlight": ["u1", "u2", "u3"]}  # fmt: skip


def lease(annotations: dict[str, str], **spec: object) -> dict[str, object]:
    return {
        "metadata": {"name": "w-1", "namespace": "fleet", "annotations": annotations},
        "spec": {"renewTime": "2026-12-02T16:00:00.000000Z", "leaseDurationSeconds": 15} | spec,
    }


def test_a_worker_shows_its_inventory_load_and_when_its_lease_expires() -> None:
    shown = worker(lease({"diffleet.io/inventory": json.dumps(INVENTORY)}))
    assert shown.inventory is not None
    assert shown.inventory.pool == "a100"
    assert shown.load == 0.75
    assert shown.renewed_at == datetime(2026, 12, 2, 16, 0, tzinfo=UTC)
    assert shown.expires_at == datetime(2026, 12, 2, 16, 0, 15, tzinfo=UTC)


def test_an_unreadable_announcement_or_renew_time_is_shown_as_null() -> None:
    shown = worker(lease({"diffleet.io/inventory": "{not json"}, renewTime="yesterday"))
    assert (shown.inventory, shown.load, shown.renewed_at, shown.expires_at) == (
        None, None, None, None,
    )  # fmt: skip
    assert worker(lease({})).inventory is None


def test_a_pool_without_a_fleet_label_is_the_platform_namespace_s_and_bad_fields_are_named(
) -> None:  # fmt: skip
    body = {"metadata": {"name": "a100"}, "spec": {"gpuType": "a100", "vramGiB": 80,
            "maxReplicas": "many"}, "status": {"desiredReplicas": 2}}  # fmt: skip
    shown = pool(body, "diffleet-system")
    assert shown.fleet_namespace == "diffleet-system"
    assert shown.status.desired_replicas == 2
    assert [error.field for error in shown.invalid_fields] == ["spec.maxReplicas"]
