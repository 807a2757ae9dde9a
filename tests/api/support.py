"""The API in tests: a real `diffleet-api` process per test (uvicorn on a free port)
against the local stack, tenants with a key per role, and ModelCaches to price jobs."""

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import psycopg

from diffleet_api import db, platform_keys, tenants
from diffleet_api.settings import JWT_AUDIENCE
from diffleet_api.tokens import Role
from diffleet_core.resources.generation_job import Tier
from diffleet_core.settings import DEVELOPMENT_JWT_SECRET
from tests.support.kube_api import GENERATION_JOBS, MODEL_CACHES
from tests.support.platform import Platform, Process, free_port, spawn
from tests.support.polling import eventually
from tests.support.stack import Kubectl

ISSUER = "https://diffleet.local"


@dataclass
class Api:
    """One API process and its base URL."""

    process: Process
    url: str

    def client(self, key: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


def spawn_api(
    namespace: str, count: int = 1, env: dict[str, str] | None = None, **settings: str
) -> list[Api]:
    """Starts `count` `diffleet-api` processes together and waits until all are ready.
    Their watcher follows only `namespace` and leads under a lock of its own; queues
    carry `namespace` as their prefix (as the test's operator does). `env` overrides the
    platform's settings (DIFFLEET_DATABASE_URL, say)."""
    apis = []
    for index in range(count):
        port = free_port()
        variables = {
            "DIFFLEET_QUEUE_PREFIX": namespace,
            "DIFFLEET_API_PORT": str(port),
            "DIFFLEET_API_WATCH_NAMESPACES": json.dumps([namespace]),
            "DIFFLEET_API_WATCHER_LOCK": f"{namespace}-watcher",
            "DIFFLEET_API_WEBHOOK_BACKOFF_SECONDS": "0.2",
            "DIFFLEET_API_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        }
        variables |= {f"DIFFLEET_API_{key.upper()}": value for key, value in settings.items()}
        process = spawn(f"{namespace}-api-{index}", ["diffleet-api"], variables | (env or {}))
        process.metrics_port = port  # the API serves /metrics on its own port
        apis.append(Api(process, f"http://127.0.0.1:{port}"))
    for api in apis:
        eventually(lambda api=api: ready(api), timeout=90, what=f"API {api.process.name} ready")  # type: ignore[misc]
    return apis


def ready(api: Api) -> bool:
    if api.process.popen.poll() is not None:
        raise AssertionError(f"diffleet-api exited:\n{api.process.tail()}")
    return httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200


@dataclass
class ApiTenant:
    id: str
    namespace: str
    keys: dict[Role, str] = field(default_factory=dict)
    key_ids: dict[Role, int] = field(default_factory=dict)

    @property
    def member(self) -> str:
        return self.keys[Role.MEMBER]


def connect() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(os.environ["DIFFLEET_DATABASE_URL"], connect_timeout=5)


def create_tenant(namespace: str, tier: Tier = Tier.FREE, credits: str = "1000") -> ApiTenant:
    """A tenant owning `namespace`, with one key per role."""
    tenant_id = f"{namespace}-{uuid.uuid4().hex[:4]}"
    made = ApiTenant(tenant_id, namespace)
    with connect() as connection:
        tenants.create_tenant(connection, tenant_id, namespace, tier, Decimal(credits))
        for role in Role:
            made.key_ids[role], made.keys[role] = tenants.create_key(
                connection, tenant_id, f"test-{role.value}", role
            )
    return made


def token(
    tenant: str, role: str = "member", secret: str = DEVELOPMENT_JWT_SECRET, **claims: Any
) -> str:
    """An HS256 JWT (the development secret by default); `claims` override the defaults."""
    now = int(time.time())
    body = {
        "sub": "test-user",
        "tenant": tenant,
        "role": role,
        "aud": JWT_AUDIENCE,
        "iss": ISSUER,
        "exp": now + 300,
    } | claims
    return jwt.encode(body, secret, algorithm="HS256")


def delete_jobs(kubectl: Kubectl, namespace: str, *names: str) -> None:
    """Deletes GenerationJobs and, as the operator does once it has cancelled a job, drops
    the operator's finalizer (the admission policy puts it on every job at creation; no
    operator runs in these tests), so the resources are gone when this returns."""
    kubectl.run("delete", "gj", *names, "-n", namespace, "--wait=false")
    kubectl.api.drop_finalizers(GENERATION_JOBS, namespace, list(names))


def model_cache(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    base_model: str | None = "sd15",
    model_type: str = "checkpoint",
    **fields: str,
) -> None:
    """A ModelCache the API can price jobs against (its artifact is never loaded);
    `base_model` None for the types that have no family (upscaler, restorer, ...);
    `fields`: more of its spec (controlType, imageEncoder, format diffusers)."""
    spec = {
        "source": f"s3://diffleet-models/tests/{namespace}/{name}.safetensors",
        "format": "safetensors",
        "type": model_type,
    } | fields
    if base_model is not None:
        spec["baseModel"] = base_model
    body = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "ModelCache",
        "metadata": {"name": name},
        "spec": spec,
    }
    kubectl.api.apply(MODEL_CACHES, namespace, body)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """An HTTP server on loopback that records POSTs; the first `failures` get a 500."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[Received] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.received.append(Received(dict(self.headers), self.rfile.read(length)))
                failing = len(receiver.received) <= receiver.failures
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each Server-Sent Event."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "event" in fields:
                yield fields.get("id", ""), fields["event"], json.loads(fields.get("data", "{}"))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


@contextmanager
def platform_key(name: str) -> Iterator[str]:
    """A key of the platform role, as `diffleet-admin platform-keys create` makes one;
    revoked on leaving."""
    db.migrate(os.environ["DIFFLEET_DATABASE_URL"])
    with connect() as connection:
        key_id, key = platform_keys.create(connection, name)
    try:
        yield key
    finally:
        with connect() as connection:
            platform_keys.revoke(connection, key_id)


@contextmanager
def api_with_real_worker(namespace: str, worker_start: float, **settings: str) -> Iterator[Api]:
    """An operator, a real worker (diffusers on the CPU, pool t4) and an API (its watcher
    settles the credits) for `namespace`, once the worker has announced itself; a real
    worker imports torch and diffusers first, on 2 shared cores: `worker_start` seconds."""
    platform = Platform(namespace=namespace, job_namespaces=[namespace])
    operator = platform.operator()
    platform.worker("cpu", simulate=False)
    [api] = spawn_api(namespace, 1, None, **settings)
    try:
        platform.wait_for_workers(operator, "t4", 1, timeout=worker_start)
        yield api
    finally:
        api.process.stop()
        platform.stop_all()
