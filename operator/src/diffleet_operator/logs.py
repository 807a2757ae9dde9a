"""Structured logging: kopf's JSON formatter writes a record's `k8s_ref` as its
"object", so a log line about a job names its namespace, name and uid."""

from typing import Any

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources.generation_job import KIND


def about_job(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """`extra=` for a log call about one GenerationJob."""
    return {
        "k8s_ref": {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        }
    }
