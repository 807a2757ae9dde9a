"""The GPUPools as last seen by their watch (handlers/gpu_pools.py): each pool's spec, the
status stored on it, and whether it is being deleted (its workers take no more jobs).

A GPUPool belongs to one fleet: the operator whose fleet namespace its label
`diffleet.io/fleet` names (without it, diffleet-system) serves it, and the others
(a second installation, or tests, each with a fleet of its own) leave it alone.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from diffleet_core import API_GROUP, API_VERSION, SYSTEM_NAMESPACE
from diffleet_core.resources.gpu_pool import FLEET_LABEL, KIND, GPUPoolSpec


def fleet_of(body: Mapping[str, Any]) -> str:
    """The fleet namespace of the operator that serves the GPUPool."""
    labels = body.get("metadata", {}).get("labels") or {}
    return str(labels.get(FLEET_LABEL, SYSTEM_NAMESPACE))


@dataclass(frozen=True)
class PoolRecord:
    name: str
    uid: str
    generation: int
    resource_version: str
    finalizers: tuple[str, ...]
    spec: GPUPoolSpec
    # The status as stored (camelCase), what the controller compares its writes with.
    status: Mapping[str, Any]
    deleting: bool

    @property
    def reference(self) -> dict[str, Any]:
        """A body that names the GPUPool, as an Event's involved object."""
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name, "uid": self.uid},
        }

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "PoolRecord":
        """The record of a GPUPool body; ValidationError when its spec does not parse."""
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            generation=int(meta.get("generation") or 0),
            resource_version=str(meta.get("resourceVersion") or ""),
            finalizers=tuple(meta.get("finalizers") or ()),
            spec=GPUPoolSpec.model_validate(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
        )


class PoolIndex:
    def __init__(self) -> None:
        self._pools: dict[str, PoolRecord] = {}

    def upsert(self, record: PoolRecord) -> None:
        self._pools[record.name] = record

    def remove(self, name: str) -> None:
        self._pools.pop(name, None)

    def record(self, name: str) -> PoolRecord | None:
        return self._pools.get(name)

    def get(self, name: str) -> GPUPoolSpec | None:
        record = self._pools.get(name)
        return None if record is None else record.spec

    def specs(self) -> Mapping[str, GPUPoolSpec]:
        """Every pool's spec, those being deleted included (their workers' jobs still run
        under its tiers)."""
        return {name: record.spec for name, record in self._pools.items()}

    def deleting(self, name: str) -> bool:
        """Whether the pool is being deleted: dispatch no more to its workers."""
        record = self._pools.get(name)
        return record is not None and record.deleting
