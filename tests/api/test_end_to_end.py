"""A job through the front door, end to end: REST submit, live progress over SSE, the
real operator and a simulated worker, presigned outputs, the signed webhook, and the
credits settled; and webhooks for jobs created with kubectl."""

import base64
import hashlib
import io
import json
import os
import time
from typing import Any

import httpx
import pika
from PIL import Image

from diffleet_api.settings import ApiSettings
from diffleet_api.webhooks import SIGNATURE_HEADER, verify
from diffleet_core.messages import JobProgress, JobRef
from tests.api.support import Api, ApiTenant, WebhookReceiver, connect, sse_events
from tests.support.platform import Platform, apply_job, register_model
from tests.support.polling import eventually
from tests.support.stack import Kubectl


def preview_png() -> str:
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(image, "PNG")
    return base64.b64encode(image.getvalue()).decode()


def publish_preview(namespace: str, uid: str, name: str, step: int) -> None:
    """The report of step `step` with a preview, as the diffusers worker sends it (the
    simulated worker sends none); the worker's own report of that step, coming later, is
    then a duplicate the stream drops."""
    report = JobProgress(
        job=JobRef(uid=uid, namespace=namespace, name=name, attempt=1),
        step=step,
        total_steps=8,
        preview_png_base64=preview_png(),
    )
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["DIFFLEET_AMQP_URL"]))
    try:
        connection.channel().basic_publish(f"{namespace}.progress", uid, report.to_bytes())
    finally:
        connection.close()


def test_submit_stream_progress_download_and_webhook(
    platform_api: Api, tenant: ApiTenant, platform: Platform, kubectl: Kubectl
) -> None:
    namespace = tenant.namespace
    operator = platform.operator()
    register_model(kubectl, namespace, "sd15-live")
    receiver = WebhookReceiver()
    spec = {"model": "sd15-live", "prompt": "a red circle", "steps": 8, "webhookUrl": receiver.url}
    seen: list[tuple[str, dict[str, Any]]] = []
    try:
        with platform_api.client(tenant.member, timeout=120) as http:
            job = http.post("/v1/jobs", json=spec).json()
            with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                for _, name, data in sse_events(stream.iter_lines()):
                    seen.append((name, data))
                    if name == "queued" and not platform.processes[1:]:
                        platform.worker("w1", sim_step_seconds="1")
                    if name == "progress" and data["step"] == 1:
                        publish_preview(namespace, job["uid"], job["id"], step=2)
                    if name in ("succeeded", "failed", "cancelled"):
                        break
            names = [name for name, _ in seen]
            assert names[0] in ("pending", "queued")
            queued = next(data for name, data in seen if name == "queued")
            assert queued["position"] >= 1
            assert names[-1] == "succeeded", seen[-1]
            progress = [data for name, data in seen if name == "progress"]
            assert [p["step"] for p in progress] == list(range(1, 9))
            assert progress[1]["preview"].startswith("data:image/png;base64,")
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
