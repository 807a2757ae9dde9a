"""ModelCaches as the operator last saw them, fed by kopf's watch."""

from collections.abc import Collection, Mapping
from typing import Any


class ModelIndex:
    def __init__(self) -> None:
        self._models: dict[tuple[str, str], Mapping[str, Any]] = {}

    def observe(self, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        self._models[(meta["namespace"], meta["name"])] = body

    def remove(self, namespace: str, name: str) -> None:
        self._models.pop((namespace, name), None)

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self._models.get((namespace, name))

    def all(self) -> list[Mapping[str, Any]]:
        return list(self._models.values())

    def in_namespaces(self, namespaces: Collection[str]) -> list[Mapping[str, Any]]:
        """The ModelCaches of `namespaces`; all of them when it is empty."""
        if not namespaces:
            return self.all()
        return [body for (namespace, _), body in self._models.items() if namespace in namespaces]
