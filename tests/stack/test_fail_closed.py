"""Secrets fail closed: outside development mode the platform's processes refuse to start
on a credential that is unset or committed to the repository, naming its variable; in
development mode (what `make env` exports) they start and say so in their log. /readyz
tells anonymous callers only which check failed; why is in the API's log."""

import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest

from diffleet_core.settings import (
    DEVELOPMENT_JWT_SECRET,
    DEVELOPMENT_MODE,
    DEVELOPMENT_WEBHOOK_SECRET,
)
from tests.api.support import spawn_api
from tests.support.platform import Platform, Process, free_port, spawn
from tests.support.polling import eventually

BIN = Path(sys.executable).parent
STACK_AMQP = "amqp://diffleet:diffleet-local@rabbitmq:5672/diffleet"


def deployment_env() -> dict[str, str]:
    """The test's environment without development mode, every credential a secret of
    its own, every service on a closed port (a process that starts would fail later)."""
    env = {key: value for key, value in os.environ.items() if key != DEVELOPMENT_MODE}
    secret = secrets.token_urlsafe()
    return env | {
        "DIFFLEET_AMQP_URL": f"amqp://diffleet:{secret}@127.0.0.1:1/diffleet",
        "DIFFLEET_DATABASE_URL": f"postgresql://diffleet:{secret}@127.0.0.1:1/diffleet",
        "AWS_SECRET_ACCESS_KEY": secret,
        "DIFFLEET_API_JWT_SECRET": secret,
        "DIFFLEET_API_WEBHOOK_SECRET": secret,
    }


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        (["diffleet-api"], "DIFFLEET_API_JWT_SECRET", DEVELOPMENT_JWT_SECRET),
        (["diffleet-api"], "DIFFLEET_API_WEBHOOK_SECRET", DEVELOPMENT_WEBHOOK_SECRET),
        (["diffleet-api"], "DIFFLEET_DATABASE_URL", None),
        (["diffleet-api"], "AWS_SECRET_ACCESS_KEY", "diffleet-local-secret"),
        (["diffleet-operator"], "DIFFLEET_AMQP_URL", None),
        (["diffleet-operator"], "AWS_SECRET_ACCESS_KEY", "diffleet-local-secret"),
        (["diffleet-worker", "--simulate"], "DIFFLEET_AMQP_URL", STACK_AMQP),
    ],
)
def test_outside_development_mode_a_development_credential_stops_the_process(
    command: list[str], variable: str, value: str | None
) -> None:
    """`None`: the variable unset, so the committed default applies."""
    env = deployment_env()
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert f"{command[0]}: {variable} " in result.stderr, result.stderr[-2000:]
    assert DEVELOPMENT_MODE in result.stderr


def running(process: Process) -> None:
    if process.popen.poll() is not None:
        raise AssertionError(f"{process.name} exited:\n{process.tail()}")


def logged(process: Process, text: str) -> bool:
    running(process)
    return text in process.log.read_text(errors="replace")


def test_in_development_mode_the_api_starts_and_says_so(namespace: str) -> None:
    (api,) = spawn_api(namespace)
    try:
        assert logged(api.process, "development mode (DIFFLEET_DEVELOPMENT_MODE=true)")
    finally:
        api.process.stop()


def test_in_development_mode_the_operator_starts_and_says_so(platform: Platform) -> None:
    operator = platform.operator()

    def serving() -> bool:
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200 and logged(operator, "development mode")

    eventually(serving, timeout=60, what="the operator serves /metrics")


def test_readyz_says_only_which_check_failed_and_logs_why(namespace: str) -> None:
    closed, port = free_port(), free_port()
    env = {
        "DIFFLEET_QUEUE_PREFIX": namespace,
        "DIFFLEET_API_PORT": str(port),
        "DIFFLEET_API_WATCHER": "false",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{closed}",
    }
    api = spawn(f"{namespace}-api-s3-down", [str(BIN / "diffleet-api")], env)

    def readiness() -> httpx.Response:
        running(api)
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)

    try:
        response = eventually(readiness, timeout=90, what="the API answers /readyz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "not ready",
            "checks": {"kubernetes": "ok", "database": "ok", "rabbitmq": "ok", "s3": "failed"},
        }
        eventually(
            lambda: logged(api, "readiness check s3 failed") and logged(api, f":{closed}"),
            timeout=10,
            what="the reason in the API's log",
        )
    finally:
        api.stop()
