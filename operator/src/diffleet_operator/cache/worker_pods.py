"""The GPUPools' worker pods in the fleet namespace, as last seen by their watch
(autoscaler/pod_watch.py) or as the operator's own writes returned them.

A pod the operator has just created is here at once (from the create's answer), so the
next reconciliation counts it before the watch reports it, as a ReplicaSet's
expectations do; a pod it has just deleted stops counting at once for the same reason.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from diffleet_core.fleet import DO_NOT_DISRUPT_ANNOTATION, GPUPOOL_LABEL

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class WorkerPod:
    name: str
    pool: str
    node: str  # "" while not bound
    phase: str
    deleting: bool
    do_not_disrupt: bool

    @property
    def terminal(self) -> bool:
        """Its worker has exited for good: it will never run again."""
        return self.phase in TERMINAL_PHASES

    @property
    def active(self) -> bool:
        """It counts as one of its pool's replicas."""
        return not self.terminal and not self.deleting

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> "WorkerPod":
        meta = body["metadata"]
        annotations = meta.get("annotations") or {}
        return cls(
            name=meta["name"],
            pool=(meta.get("labels") or {}).get(GPUPOOL_LABEL, ""),
            node=(body.get("spec") or {}).get("nodeName") or "",
            phase=(body.get("status") or {}).get("phase") or "Pending",
            deleting=bool(meta.get("deletionTimestamp")),
            do_not_disrupt=annotations.get(DO_NOT_DISRUPT_ANNOTATION) == "true",
        )


class WorkerPods:
    def __init__(self) -> None:
        self._pods: dict[str, WorkerPod] = {}
        # Pods the operator deleted whose deletion the watch has not reported yet: an
        # older event of one arriving late must not make it a replica again.
        self._deleted: set[str] = set()

    def upsert(self, body: Mapping[str, Any]) -> WorkerPod:
        pod = WorkerPod.of(body)
        if pod.name in self._deleted:
            pod = replace(pod, deleting=True)
        self._pods[pod.name] = pod
        return pod

    def deleted(self, name: str) -> None:
        """The operator deleted the pod: it is no replica any more."""
        self._deleted.add(name)
        if pod := self._pods.get(name):
            self._pods[name] = replace(pod, deleting=True)

    def remove(self, name: str) -> None:
        """The pod is gone (its watch said so)."""
        self._pods.pop(name, None)
        self._deleted.discard(name)

    def get(self, name: str) -> WorkerPod | None:
        return self._pods.get(name)

    def all(self) -> list[WorkerPod]:
        return list(self._pods.values())

    def of_pool(self, pool: str) -> list[WorkerPod]:
        return [pod for pod in self._pods.values() if pod.pool == pool]
