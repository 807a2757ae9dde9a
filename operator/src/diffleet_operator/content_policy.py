"""Each namespace's content policy (diffleet_core.policy): its ConfigMap diffleet-policy,
else the system namespace's (the namespace's own replaces the platform's), each read with
a GET and remembered for MAX_AGE_SECONDS, so that a change applies within that long. A
read that fails raises, and is not remembered: admission tries the job again later rather
than admit it unchecked."""

import time
from collections.abc import Awaitable, Callable, Mapping

from diffleet_core.model_rules import lookup_namespaces
from diffleet_core.policy import POLICY_CONFIGMAP, Policy
from diffleet_core.remembered import Remembered

MAX_AGE_SECONDS = 10.0

# (namespace, name) -> the ConfigMap's data, None when there is no such ConfigMap.
ReadConfigMap = Callable[[str, str], Awaitable[Mapping[str, str] | None]]


class ContentPolicies:
    def __init__(
        self,
        read: ReadConfigMap,
        system_namespace: str,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._system_namespace = system_namespace
        # Each namespace's diffleet-policy data (None: it has none).
        self._known: Remembered[Mapping[str, str] | None] = Remembered(max_age_seconds, clock=clock)

    async def of(self, namespace: str) -> Policy:
        """The policy that applies to the namespace's jobs (empty when there is none)."""
        for where in lookup_namespaces(namespace, self._system_namespace):
            data = await self._data(where)
            if data is not None:
                return Policy.from_configmap(data, f"{where}/{POLICY_CONFIGMAP}")
        return Policy()

    def last_read(self, namespace: str) -> Policy | None:
        """The policy as last read, however old, without a request; None if a namespace
        it depends on was never read. A dispatch takes this one: admission read it (at
        most MAX_AGE_SECONDS before the job was admitted), and a dispatch round must not
        wait on the API server for each job."""
        for where in lookup_namespaces(namespace, self._system_namespace):
            read = self._known.last(where, POLICY_CONFIGMAP)
            if read is None:
                return None
            if (data := read.result()) is not None:
                return Policy.from_configmap(data, f"{where}/{POLICY_CONFIGMAP}")
        return Policy()

    async def _data(self, namespace: str) -> Mapping[str, str] | None:
        return await self._known.get(
            namespace, POLICY_CONFIGMAP, lambda: self._read(namespace, POLICY_CONFIGMAP)
        )
