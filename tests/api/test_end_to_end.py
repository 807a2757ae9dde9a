"""A job through the front door, end to end: REST submit, live progress over SSE, the
real operator and a real diffusers worker (a tiny model on the CPU), presigned outputs,
the signed webhook, and the credits settled; and webhooks for jobs created with kubectl."""

import base64
import hashlib
import io
import json
import time
from typing import Any

import httpx
import pytest
from PIL import Image

from diffleet_api.settings import ApiSettings
from diffleet_api.webhooks import SIGNATURE_HEADER, verify
from tests.api.support import Api, ApiTenant, WebhookReceiver, connect, sse_events
from tests.support.groups import DIFFUSERS
from tests.support.platform import Platform, apply_job
from tests.support.polling import eventually
from tests.support.stack import Kubectl

pytestmark = DIFFUSERS

# The longest quiet gap on the stream: a real worker imports torch and diffusers and loads
# its model before the first step, on 2 shared cores.
STREAM_READ_TIMEOUT = 300
PREFIX = "data:image/png;base64,"


def decoded_preview(data_uri: str) -> tuple[int, int]:
    """The size of a preview sent as a PNG data URI."""
    assert data_uri.startswith(PREFIX)
    with Image.open(io.BytesIO(base64.b64decode(data_uri.removeprefix(PREFIX)))) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.usefixtures("models")
def test_submit_stream_progress_download_and_webhook(
    platform_api: Api, tenant: ApiTenant, platform: Platform, kubectl: Kubectl
) -> None:
    namespace = tenant.namespace
    operator = platform.operator()
    receiver = WebhookReceiver()
    spec = {
        "model": "tiny-sd15",
        "prompt": "a red circle",
        "steps": 5,
        "width": 64,
        "height": 64,
        "webhookUrl": receiver.url,
    }
    seen: list[tuple[str, dict[str, Any]]] = []
    try:
        with platform_api.client(tenant.member, timeout=STREAM_READ_TIMEOUT) as http:
            job = http.post("/v1/jobs", json=spec).json()
            with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                for _, name, data in sse_events(stream.iter_lines()):
                    seen.append((name, data))
                    if name == "queued" and not platform.processes[1:]:
                        platform.worker("w1", simulate=False, preview_every_steps="2")
                    if name in ("succeeded", "failed", "cancelled"):
                        break
            names = [name for name, _ in seen]
            assert names[0] in ("pending", "queued")
            queued = next(data for name, data in seen if name == "queued")
            assert queued["position"] >= 1
            assert names[-1] == "succeeded", seen[-1]
            progress = [data for name, data in seen if name == "progress"]
            assert [p["step"] for p in progress] == [1, 2, 3, 4, 5]
            # Steps 2 and 4, at latent resolution (none with the last: the image follows).
            previews = {
                p["step"]: decoded_preview(p["preview"]) for p in progress if "preview" in p
            }
            assert previews == {2: (8, 8), 4: (8, 8)}
            final = seen[-1][1]
            assert final["status"]["phase"] == "Succeeded"

            outputs = http.get(f"/v1/jobs/{job['id']}/outputs").json()["items"]
            assert len(outputs) == 1
            image = httpx.get(outputs[0]["url"], timeout=10).content
            assert image.startswith(b"\x89PNG")
            assert hashlib.sha256(image).hexdigest() == outputs[0]["sha256"]

            def settled() -> list[dict[str, Any]] | None:
                ledger = http.get("/v1/usage").json()["ledger"]
                return ledger if ledger[0]["kind"] == "settle" else None

            eventually(settled, timeout=30, what="credits settled")
        listed = kubectl.run("get", "gj", "-n", namespace, "-o", "name").stdout.split()
        assert listed == [f"generationjob.diffleet.io/{job['id']}"]

        eventually(lambda: receiver.received or None, timeout=30, what="webhook delivered")
        [hook] = receiver.received
        signature = hook.headers[SIGNATURE_HEADER]
        secret = ApiSettings().webhook_secret
        assert verify(secret, hook.body, signature, tolerance_seconds=300, now=time.time())
        payload = json.loads(hook.body)
        assert payload["phase"] == "Succeeded"
        assert payload["job"]["uid"] == job["uid"]
    finally:
        receiver.close()
        operator.stop()


def test_webhook_of_a_kubectl_job_is_retried_and_recorded(
    platform_api: Api, tenant: ApiTenant, kubectl: Kubectl
) -> None:
    receiver = WebhookReceiver(failures=2)
    try:
        apply_job(kubectl, tenant.namespace, "from-kubectl", model="x", webhookUrl=receiver.url)
        kubectl.run(
            "patch", "gj", "from-kubectl", "-n", tenant.namespace, "--subresource=status",
            "--type=merge", "-p", '{"status": {"phase": "Failed", "reason": "OutOfMemory"}}',
        )  # fmt: skip
        eventually(lambda: len(receiver.received) >= 3, timeout=30, what="three attempts")
        uid = kubectl.json("get", "gj", "from-kubectl", "-n", tenant.namespace)["metadata"]["uid"]

        def delivered() -> tuple[Any, ...] | None:
            with connect() as connection:
                row = connection.execute(
                    "select state, attempts, last_status from webhook_deliveries"
                    " where job_uid = %s",
                    (uid,),
                ).fetchone()
            return row if row and row[0] == "delivered" else None

        assert eventually(delivered, timeout=10, what="delivery recorded") == ("delivered", 3, 204)
        assert len({hook.headers["Diffleet-Delivery"] for hook in receiver.received}) == 1
        assert json.loads(receiver.received[-1].body)["phase"] == "Failed"
    finally:
        receiver.close()
