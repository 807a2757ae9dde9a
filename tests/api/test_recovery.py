"""The API recovers by itself from its dependencies' outages (issue 12). The API under
test reaches PostgreSQL (or RabbitMQ) through a loopback TCP proxy that the test drops,
closing every connection and refusing new ones, then restores: a real network fault,
without killing the services other tests share.

During a PostgreSQL outage requests are 503 problem+json within the request timeout and
/readyz is 503; once it is back both answer again with no restart, and the job watcher
leads again and catches up: a job that finished during the outage is settled once and
its webhook delivered once."""

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from itertools import takewhile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from diffleet_api.errors import PROBLEM_JSON
from tests.api.support import (
    Api,
    ApiTenant,
    WebhookReceiver,
    connect,
    delete_jobs,
    spawn_api,
    sse_events,
)
from tests.api.test_watcher_isolation import delivered_to, set_status, settled, submit
from tests.support.platform import LOG_DIR
from tests.support.polling import eventually
from tests.support.stack import Kubectl
from tests.support.tcp_proxy import TcpProxy

REQUEST_TIMEOUT = 3.0
SERVER = re.compile(r"server:\s*(\S+)")
LEADING = "job watcher leading"


def proxied(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port those of `proxy`."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def proxy_of(url: str) -> TcpProxy:
    parts = urlsplit(url)
    assert parts.hostname, url
    assert parts.port, url
    return TcpProxy(parts.hostname, parts.port)


@pytest.fixture
def database() -> Iterator[TcpProxy]:
    with proxy_of(os.environ["DIFFLEET_DATABASE_URL"]) as proxy:
        yield proxy


@pytest.fixture
def broker() -> Iterator[TcpProxy]:
    with proxy_of(os.environ["DIFFLEET_AMQP_URL"]) as proxy:
        yield proxy


@pytest.fixture
def api_server() -> Iterator[TcpProxy]:
    with proxy_of(kube_server(Path(os.environ["KUBECONFIG"]).read_text())) as proxy:
        yield proxy


def kube_server(kubeconfig: str) -> str:
    """The API server's URL in a kubeconfig (the local stack's has one cluster)."""
    found = SERVER.search(kubeconfig)
    assert found, kubeconfig
    return found[1]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture
def api_behind(namespace: str, database: TcpProxy) -> Iterator[Api]:
    """An API process with its job watcher, reaching PostgreSQL through `database`."""
    env = {"DIFFLEET_DATABASE_URL": proxied(os.environ["DIFFLEET_DATABASE_URL"], database)}
    [started] = spawn_api(namespace, env=env, request_timeout_seconds=str(REQUEST_TIMEOUT))
    yield started
    started.process.stop()


@pytest.fixture
def api_behind_broker(namespace: str, broker: TcpProxy) -> Iterator[Api]:
    """An API process reaching RabbitMQ through `broker`, keep-alives every second."""
    env = {"DIFFLEET_AMQP_URL": proxied(os.environ["DIFFLEET_AMQP_URL"], broker)}
    [started] = spawn_api(
        namespace,
        env=env,
        request_timeout_seconds=str(REQUEST_TIMEOUT),
        sse_keepalive_seconds="1",
    )
    yield started
    started.process.stop()


@pytest.fixture
def api_behind_api_server(namespace: str, api_server: TcpProxy, tmp_path: Path) -> Iterator[Api]:
    """An API process reaching the Kubernetes API server through `api_server` (TLS passes
    through: the certificate names 127.0.0.1)."""
    kubeconfig = Path(os.environ["KUBECONFIG"]).read_text()
    server = kube_server(kubeconfig)
    proxied_config = tmp_path / "kubeconfig"
    proxied_config.write_text(kubeconfig.replace(server, proxied(server, api_server)))
    env = {"KUBECONFIG": str(proxied_config)}
    [started] = spawn_api(namespace, env=env, request_timeout_seconds=str(REQUEST_TIMEOUT))
    yield started
    started.process.stop()


def readiness(api: Api) -> tuple[int, dict[str, str]]:
    answer = httpx.get(f"{api.url}/readyz", timeout=REQUEST_TIMEOUT * 3)
    return answer.status_code, answer.json()["checks"]


def not_ready(api: Api) -> dict[str, str]:
    """/readyz's checks once it answers 503."""

    def probe() -> dict[str, str] | None:
        status, checks = readiness(api)
        return checks if status == 503 else None

    return eventually(probe, timeout=30, what="/readyz 503")


def ledger_entries(uid: str) -> list[str]:
    with connect() as connection:
        rows = connection.execute(
            "select kind from ledger where job_uid = %s order by id", (uid,)
        ).fetchall()
    return [row[0] for row in rows]


def test_a_postgresql_outage_is_503_then_recovers_and_a_job_finished_during_it_is_settled_once(
    api_behind: Api,
    database: TcpProxy,
    tenant: ApiTenant,
    kubectl: Kubectl,
    receiver: WebhookReceiver,
) -> None:
    job = submit(api_behind, tenant, webhookUrl=receiver.url)
    deleted = submit(api_behind, tenant)
    eventually(lambda: LEADING in api_behind.process.tail(200), timeout=30, what="leading")

    database.drop()
    assert not_ready(api_behind)["database"] == "failed"
    with api_behind.client(tenant.member, timeout=REQUEST_TIMEOUT * 3) as http:
        started = time.monotonic()
        during = http.get(f"/v1/jobs/{job['id']}")
        elapsed = time.monotonic() - started
    assert during.status_code == 503, during.text
    assert during.headers["content-type"] == PROBLEM_JSON
    assert during.json()["type"].endswith("/unavailable")
    assert elapsed < REQUEST_TIMEOUT + 2, f"answered after {elapsed:.1f}s"

    # One job finishes, another is deleted, while the API cannot record either.
    set_status(kubectl, tenant.namespace, job["id"], {"phase": "Succeeded"})
    delete_jobs(kubectl, tenant.namespace, deleted["id"])
    eventually(
        lambda: "job watcher stopped" in api_behind.process.tail(400),
        timeout=30,
        what="the watcher stopped leading",
    )
    assert ledger_entries(job["uid"]) == ["reserve"]

    database.restore()
    eventually(lambda: readiness(api_behind)[0] == 200, timeout=30, what="/readyz 200")
    with api_behind.client(tenant.member) as http:
        after = http.get(f"/v1/jobs/{job['id']}")
    assert after.status_code == 200, after.text
    assert after.json()["status"]["phase"] == "Succeeded"

    assert settled(job["uid"], "settled")[0] == "Succeeded"
    assert delivered_to(receiver, job["uid"])["phase"] == "Succeeded"
    assert api_behind.process.tail(2000).count(LEADING) >= 2
    assert ledger_entries(job["uid"]) == ["reserve", "settle"]
    assert settled(deleted["uid"], "refunded")[0] == "Deleted"
    assert ledger_entries(deleted["uid"]) == ["reserve", "refund"]
    deliveries = [hook for hook in receiver.received if job["uid"] in hook.body.decode()]
    assert len(deliveries) == 1
    assert json.loads(deliveries[0].body)["type"] == "job.finished"


def test_a_rabbitmq_outage_ends_event_streams_and_a_resumed_one_gets_what_follows(
    api_behind_broker: Api, broker: TcpProxy, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    api = api_behind_broker
    job = submit(api, tenant)
    events = f"/v1/jobs/{job['id']}/events"
    with api.client(tenant.member, timeout=REQUEST_TIMEOUT * 3) as http:
        with http.stream("GET", events) as stream:
            # Keep-alives come every second: a stream that hangs is cut at `deadline`.
            deadline = time.monotonic() + 20
            lines = takewhile(lambda _: time.monotonic() < deadline, stream.iter_lines())
            frames = sse_events(lines)
            last_id, first, _ = next(frames)
            assert first == "pending"
            broker.drop()
            deadline = time.monotonic() + 20
            rest = [name for _, name, _ in frames]
        assert time.monotonic() < deadline, "the stream did not end when RabbitMQ went away"
        assert rest == []

        assert not_ready(api)["rabbitmq"] == "failed"
        during = http.get(events)
        assert during.status_code == 503, during.text
        assert during.headers["content-type"] == PROBLEM_JSON

        broker.restore()
        eventually(lambda: readiness(api)[0] == 200, timeout=60, what="/readyz 200")
        set_status(kubectl, tenant.namespace, job["id"], {"phase": "Succeeded"})
        with http.stream("GET", events, headers={"Last-Event-ID": last_id}) as stream:
            resumed = [(name, data) for _, name, data in sse_events(stream.iter_lines())]
    assert [name for name, _ in resumed] == ["succeeded"]
    assert resumed[0][1]["status"]["phase"] == "Succeeded"


def test_a_job_finished_while_the_api_server_was_away_is_settled_once_after_it_is_back(
    api_behind_api_server: Api,
    api_server: TcpProxy,
    tenant: ApiTenant,
    kubectl: Kubectl,
    receiver: WebhookReceiver,
) -> None:
    api = api_behind_api_server
    job = submit(api, tenant, webhookUrl=receiver.url)
    eventually(lambda: LEADING in api.process.tail(200), timeout=30, what="leading")

    api_server.drop()
    assert not_ready(api)["kubernetes"] == "failed"
    eventually(
        lambda: "job watcher stopped" in api.process.tail(400),
        timeout=30,
        what="the watcher lost its watch",
    )
    # Written past the proxy: the job finishes while the API's watch is down.
    set_status(kubectl, tenant.namespace, job["id"], {"phase": "Succeeded"})

    api_server.restore()
    eventually(lambda: readiness(api)[0] == 200, timeout=30, what="/readyz 200")
    assert settled(job["uid"], "settled")[0] == "Succeeded"
    assert delivered_to(receiver, job["uid"])["phase"] == "Succeeded"
    assert ledger_entries(job["uid"]) == ["reserve", "settle"]
    assert sum(job["uid"] in hook.body.decode() for hook in receiver.received) == 1


def test_an_api_started_while_postgresql_and_rabbitmq_are_away_comes_up_once_they_are_back(
    namespace: str, database: TcpProxy, broker: TcpProxy
) -> None:
    database.drop()
    broker.drop()
    log = LOG_DIR / f"{namespace}-api-0.log"  # spawn_api's name for its first process

    def restore_once_waited_for(proxy: TcpProxy, what: str) -> None:
        eventually(
            lambda: log.exists() and f"{what} unreachable" in log.read_text(errors="replace"),
            timeout=60,
            what=f"the starting API waiting for {what}",
        )
        proxy.restore()

    def restore_both() -> None:
        restore_once_waited_for(database, "PostgreSQL")
        restore_once_waited_for(broker, "RabbitMQ")

    restorer = threading.Thread(target=restore_both, daemon=True)
    restorer.start()
    env = {
        "DIFFLEET_DATABASE_URL": proxied(os.environ["DIFFLEET_DATABASE_URL"], database),
        "DIFFLEET_AMQP_URL": proxied(os.environ["DIFFLEET_AMQP_URL"], broker),
    }
    [started] = spawn_api(namespace, env=env)  # returns once /readyz is 200
    restorer.join(timeout=5)
    try:
        assert started.process.popen.poll() is None
        text = log.read_text(errors="replace")
        assert "PostgreSQL unreachable" in text
        assert "RabbitMQ unreachable" in text
        assert httpx.get(f"{started.url}/readyz", timeout=5).status_code == 200
    finally:
        started.process.stop()
