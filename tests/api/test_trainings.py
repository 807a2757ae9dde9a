"""Training datasets and TrainingJobs through the API, against the real stack (no operator
runs: what is tested is what the API owns). A dataset uploads as a zip or as a list,
cleaned and checked by the training rules; a training is a TrainingJob in the tenant's
namespace with its credits reserved, read, listed and cancelled; the tier, the balance
and bad bodies refuse it naming the rule or the field; the watcher refunds a cancelled
training, and its event stream follows the status the operator would write."""

import asyncio
import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import aio_pika
import boto3
import httpx
import pytest
from PIL import Image

from diffleet_core.messages import JobRef, TrainingProgress
from diffleet_core.queues import Topology, training_progress_key
from diffleet_core.resources.generation_job import Tier
from tests.api.images import EXIF_MARKER, has_exif, picture
from tests.api.support import (
    Api,
    ApiTenant,
    connect,
    create_tenant,
    model_cache,
    spawn_api,
    sse_events,
)
from tests.support.pictures import png_bytes
from tests.support.polling import eventually
from tests.support.stack import Kubectl

ZIP = {"Content-Type": "application/zip"}
UPLOADS = "diffleet-uploads"


def square(colour: str) -> bytes:
    return png_bytes(Image.new("RGB", (64, 64), colour))


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


DATASET = {
    "shapes/1.png": square("blue"),
    "shapes/1.txt": b"a zorp circle",
    "shapes/2.jpg": picture("JPEG"),
    "shapes/2.txt": "a zorp square, caf\u00e9".encode(),
    "shapes/3.png": square("navy"),
    "shapes/3.txt": b"\xef\xbb\xbfa zorp star\n",
    "README.md": b"ignored",
}


def stored(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        item["Key"].removeprefix(prefix): s3.get_object(Bucket=bucket, Key=item["Key"])[
            "Body"
        ].read()
        for item in listed
    }


@pytest.fixture
def trainer(namespace: str, kubectl: Kubectl) -> ApiTenant:
    """A standard-tier tenant (one training at a time), 1000 credits, an sd15 checkpoint
    and a LoRA to train on and against."""
    model_cache(kubectl, namespace, "sd15-test", "sd15")
    model_cache(kubectl, namespace, "a-lora", "sd15", "lora")
    return create_tenant(namespace, Tier.STANDARD)


def upload(http: httpx.Client, name: str, files: dict[str, bytes] | None = None) -> str:
    response = http.post(f"/v1/datasets/{name}", content=zipped(files or DATASET), headers=ZIP)
    assert response.status_code == 201, response.text
    uri: str = response.json()["uri"]
    return uri


def spec(dataset: str, **fields: Any) -> dict[str, Any]:
    return {
        "baseModel": "sd15-test",
        "dataset": dataset,
        "output": {"name": f"zorp-{uuid.uuid4().hex[:6]}"},
        "steps": 100,
        "resolution": 512,
        "batchSize": 2,
    } | fields


def balance(tenant: ApiTenant) -> Decimal:
    with connect() as connection:
        row = connection.execute("select balance from tenants where id = %s", (tenant.id,))
        found = row.fetchone()
    assert found is not None
    value: Decimal = found[0]
    return value


# ------------------------------------------------------------ datasets


def test_a_dataset_uploads_as_a_zip_cleaned_and_as_a_list_and_is_listed_and_deleted(
    api: Api, trainer: ApiTenant
) -> None:
    with api.client(trainer.member) as http:
        response = http.post("/v1/datasets/zorp", content=zipped(DATASET), headers=ZIP)
        assert response.status_code == 201, response.text
        dataset = response.json()
        prefix = f"{trainer.namespace}/datasets/zorp/"
        assert dataset["uri"] == f"s3://{UPLOADS}/{prefix}"
        assert dataset["examples"] == 3

        objects = stored(UPLOADS, prefix)
        assert set(objects) == {
            "shapes/1.png", "shapes/1.txt", "shapes/2.jpg", "shapes/2.txt",
            "shapes/3.png", "shapes/3.txt",
        }  # fmt: skip
        assert objects["shapes/2.txt"].decode() == "a zorp square, caf\u00e9"
        assert objects["shapes/3.txt"] == b"a zorp star"
        assert not has_exif(objects["shapes/2.jpg"])
        assert EXIF_MARKER.encode() not in objects["shapes/2.jpg"]
        assert dataset["sizeBytes"] == sum(len(data) for data in objects.values())

        listed = http.post(
            "/v1/datasets/listed",
            files=[("images", ("a.png", square("blue"))), ("images", ("b.webp", picture("WEBP")))],
            data={"captions": ["a zorp circle", "a zorp triangle"]},
        )
        assert listed.status_code == 201, listed.text
        assert listed.json()["examples"] == 2
        objects = stored(UPLOADS, f"{trainer.namespace}/datasets/listed/")
        assert objects["b.txt"] == b"a zorp triangle"
        assert set(objects) == {"a.png", "a.txt", "b.webp", "b.txt"}

        as_archive = http.post(
            "/v1/datasets/archived", files={"archive": ("set.zip", zipped(DATASET))}
        )
        assert as_archive.status_code == 201, as_archive.text

        again = http.post("/v1/datasets/zorp", content=zipped(DATASET), headers=ZIP)
        assert again.status_code == 409, again.text

        names = [item["name"] for item in http.get("/v1/datasets").json()["items"]]
        assert names == ["archived", "listed", "zorp"]
        assert http.get("/v1/datasets").json()["items"][2]["examples"] == 3

        assert http.delete("/v1/datasets/zorp").status_code == 204
        assert stored(UPLOADS, prefix) == {}
        assert http.delete("/v1/datasets/zorp").status_code == 404
        names = [item["name"] for item in http.get("/v1/datasets").json()["items"]]
        assert names == ["archived", "listed"]


def refusal(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    errors: list[dict[str, str]] = response.json()["errors"]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    ("files", "field", "rule", "named"),
    [
        ({"1.png": square("red"), "2.png": square("red"), "2.txt": b"x"}, "archive",
         "MissingCaptions", "1.png"),
        (DATASET | {"shapes/evil.pkl": b"x"}, "archive", "PickleFile", "shapes/evil.pkl"),
        ({"1.png": b"#!/bin/sh\n", "1.txt": b"x"}, "1.png", "ImageRefused", "1.png"),
        ({"1.png": square("red"), "1.txt": b"  "}, "1.txt", "CaptionRefused", "1.txt"),
        ({"../1.png": square("red"), "../1.txt": b"x"}, "archive", "fileName", "../1.png"),
        ({"1.png": square("red"), "1.jpg": picture("JPEG"), "1.txt": b"x"}, "archive",
         "AmbiguousCaptions", "1.jpg"),
        ({"notes.txt": b"x"}, "archive", "NoImages", "notes.txt"),
    ],
    ids=["missing-caption", "pickle", "not-an-image", "empty-caption", "traversal",
         "ambiguous", "no-images"],
)  # fmt: skip
def test_a_dataset_breaking_a_rule_is_refused_naming_the_file_and_nothing_is_stored(
    api: Api, trainer: ApiTenant, files: dict[str, bytes], field: str, rule: str, named: str
) -> None:
    with api.client(trainer.member) as http:
        response = http.post("/v1/datasets/bad", content=zipped(files), headers=ZIP)
    assert response.status_code == 422, response.text
    error = refusal(response)
    assert (error["field"], error["rule"]) == (field, rule)
    assert named in error["message"]
    assert stored(UPLOADS, f"{trainer.namespace}/datasets/bad/") == {}


def test_zip_bombs_and_malformed_uploads_are_refused_before_expanding(
    api: Api, trainer: ApiTenant
) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("1.png", "w", force_zip64=True) as member:
            for _ in range(300):  # 300 MiB of zeros, a few hundred KiB compressed
                member.write(bytes(1024 * 1024))
        archive.writestr("1.txt", b"x")
    many = zipped({f"{index}.txt": b"x" for index in range(2200)})
    with api.client(trainer.member) as http:
        too_big = http.post("/v1/datasets/bomb", content=bomb.getvalue(), headers=ZIP)
        assert too_big.status_code == 413, too_big.text
        assert "uncompressed" in too_big.json()["detail"]

        crowded = http.post("/v1/datasets/many", content=many, headers=ZIP)
        assert crowded.status_code == 422, crowded.text
        assert refusal(crowded)["rule"] == "maxEntries"

        garbage = http.post("/v1/datasets/garbage", content=b"PK\x03\x04 no zip", headers=ZIP)
        assert garbage.status_code == 422
        assert refusal(garbage)["field"] == "archive"

        plain = http.post(
            "/v1/datasets/plain", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415

        uneven = http.post(
            "/v1/datasets/uneven",
            files=[("images", ("a.png", square("blue")))],
            data={"captions": ["one", "two"]},
        )
        assert uneven.status_code == 422
        assert refusal(uneven)["field"] == "captions"

        named_badly = http.post("/v1/datasets/Bad_Name", content=zipped(DATASET), headers=ZIP)
        assert named_badly.status_code == 422
        assert refusal(named_badly)["field"] == "name"


# ------------------------------------------------------------ trainings


def test_a_training_is_a_training_job_of_the_tenant_with_its_credits_reserved(
    api: Api, trainer: ApiTenant, kubectl: Kubectl
) -> None:
    with api.client(trainer.member) as http:
        dataset = upload(http, "zorp")
        body = spec(dataset, validationPrompts=["a zorp circle"])
        created = http.post("/v1/trainings", json=body)
        assert created.status_code == 201, created.text
        training = created.json()
        assert training["id"].startswith("tj-")
        assert created.headers["location"] == f"/v1/trainings/{training['id']}"
        assert training["namespace"] == trainer.namespace
        # 100 steps x (512/512)² x batch 2 x 0.02 credits
        assert training["cost"] == 4
        assert training["spec"]["rank"] == 8
        assert training["status"]["attempts"] == 0
        assert balance(trainer) == Decimal(1000 - 4)
        usage = http.get("/v1/usage").json()
        assert (usage["balance"], usage["reserved"]) == (996, 4)
        assert usage["ledger"][0]["note"] == f"training {training['id']}"

        resource = kubectl.json("get", "trainingjob", training["id"], "-n", trainer.namespace)
        assert resource["metadata"]["uid"] == training["uid"]
        assert {key: resource["spec"][key] for key in body} == body

        fetched = http.get(f"/v1/trainings/{training['id']}")
        assert fetched.status_code == 200
        assert fetched.json()["uid"] == training["uid"]
        assert fetched.json()["cost"] == 4
        listed = http.get("/v1/trainings").json()
        assert [item["id"] for item in listed["items"]] == [training["id"]]
        assert listed["nextCursor"] is None
        assert http.get("/v1/trainings", params={"phase": "Succeeded"}).json()["items"] == []
        assert http.get("/v1/trainings/tj-nothing").status_code == 404

        second = http.post("/v1/trainings", json=spec(dataset))
        assert second.status_code == 429, second.text
        assert "concurrentTrainings 1" in second.json()["detail"]
        assert balance(trainer) == Decimal(996)

        cancelled = http.delete(f"/v1/trainings/{training['id']}")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["spec"]["cancel"] is True
    resource = kubectl.json("get", "trainingjob", training["id"], "-n", trainer.namespace)
    assert resource["spec"]["cancel"] is True


def test_a_named_training_is_created_once(api: Api, trainer: ApiTenant) -> None:
    with api.client(trainer.member) as http:
        dataset = upload(http, "zorp")
        created = http.post("/v1/trainings?name=my-zorp", json=spec(dataset))
        assert created.status_code == 201, created.text
        assert created.json()["id"] == "my-zorp"
        kept = balance(trainer)
        again = http.post("/v1/trainings?name=my-zorp", json=spec(dataset))
        assert again.status_code in (409, 429), again.text
    assert balance(trainer) == kept


def test_a_free_tier_tenant_is_refused(api: Api, namespace: str, kubectl: Kubectl) -> None:
    model_cache(kubectl, namespace, "sd15-test", "sd15")
    free = create_tenant(namespace, Tier.FREE)
    with api.client(free.member) as http:
        refused = http.post("/v1/trainings", json=spec(upload(http, "zorp")))
    assert refused.status_code == 403, refused.text
    assert "free tier allows no trainings" in refused.json()["detail"]
    assert kubectl.json("get", "trainingjobs", "-n", namespace)["items"] == []


def test_a_training_the_balance_does_not_cover_is_refused(
    api: Api, namespace: str, kubectl: Kubectl
) -> None:
    model_cache(kubectl, namespace, "sd15-test", "sd15")
    poor = create_tenant(namespace, Tier.PRO, credits="3")
    with api.client(poor.member) as http:
        short = http.post("/v1/trainings", json=spec(upload(http, "zorp")))
    assert short.status_code == 402, short.text
    assert "costs 4" in short.json()["detail"]
    assert kubectl.json("get", "trainingjobs", "-n", namespace)["items"] == []
    assert balance(poor) == Decimal(3)


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"rank": 0}, "rank", "minimum"),
        ({"resolution": 100}, "resolution", "multipleOf"),
        ({"steps": "many"}, "steps", "type"),
        ({"base_model": "sd15-test"}, "base_model", "additionalProperties"),
        ({"dataset": None}, "dataset", "required"),
        ({"baseModel": "nothing-here"}, "baseModel", "exists"),
        ({"baseModel": "a-lora"}, "baseModel", "modelType"),
        ({"output": {"name": "a-lora"}}, "output.name", "unique"),
        ({"dataset": "s3://diffleet-uploads/someone-else/datasets/zorp/"}, "dataset",
         "DatasetOutsideNamespace"),
        ({"dataset": "DATASETS/missing/"}, "dataset", "DatasetNotFound"),
    ],
    ids=["rank-0", "resolution-100", "steps-text", "snake-case", "no-dataset",
         "unknown-model", "a-lora-as-base", "output-taken", "foreign-dataset",
         "missing-dataset"],
)  # fmt: skip
def test_a_bad_training_body_is_refused_naming_the_field(
    api: Api, trainer: ApiTenant, kubectl: Kubectl, change: dict[str, Any], field: str, rule: str
) -> None:
    with api.client(trainer.member) as http:
        dataset = upload(http, "zorp")
        if change.get("dataset") == "DATASETS/missing/":
            change = {"dataset": dataset.replace("/zorp/", "/missing/")}
        body = spec(dataset) | change
        if change.get("dataset", "") is None:
            del body["dataset"]
        if "base_model" in change:
            del body["baseModel"]
        response = http.post("/v1/trainings", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert {"field": field, "rule": rule} in [
        {"field": error["field"], "rule": error["rule"]} for error in errors
    ], errors
    assert kubectl.json("get", "trainingjobs", "-n", trainer.namespace)["items"] == []
    assert balance(trainer) == Decimal(1000)


# ------------------------------------------------------------ the watcher and the stream


@pytest.fixture
def watching_api(namespace: str) -> Iterator[Api]:
    """An API whose watchers follow the test's namespace, abandoning unpaid resources
    after 2 s."""
    [started] = spawn_api(namespace, abandon_unreserved_after_seconds="2")
    yield started
    started.process.stop()


def set_status(kubectl: Kubectl, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Writes the status as the operator would (no operator runs here)."""
    kubectl.run(
        "patch", "trainingjob", name, "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def publish_progress(namespace: str, training: dict[str, Any], step: int, loss: float) -> None:
    """A worker's progress report, on the progress exchange of the test's queues."""
    report = TrainingProgress(
        job=JobRef(namespace=namespace, name=training["id"], uid=training["uid"], attempt=1),
        step=step,
        total_steps=100,
        loss=loss,
        steps_run=step,
    )

    async def send() -> None:
        connection = await aio_pika.connect(os.environ["DIFFLEET_AMQP_URL"], timeout=10)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                Topology(prefix=namespace).progress_exchange,
                aio_pika.ExchangeType.TOPIC,
                durable=True,
            )
            await exchange.publish(
                aio_pika.Message(report.model_dump_json().encode()),
                routing_key=training_progress_key(training["uid"]),
            )

    asyncio.run(send())


def test_the_stream_follows_a_training_and_the_watcher_refunds_it_and_cancels_the_unpaid(
    watching_api: Api, trainer: ApiTenant, kubectl: Kubectl
) -> None:
    namespace = trainer.namespace
    with watching_api.client(trainer.member, timeout=60) as http:
        dataset = upload(http, "zorp")
        training = http.post("/v1/trainings?name=followed", json=spec(dataset)).json()
        assert balance(trainer) == Decimal(996)
        prefix = f"s3://diffleet-outputs/{namespace}/trainings/followed/{training['uid']}/"
        with http.stream("GET", "/v1/trainings/followed/events") as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = sse_events(response.iter_lines())
            assert next(stream)[1:] == ("pending", pending_data())

            set_status(kubectl, namespace, "followed", {"phase": "Running", "attempts": 1})
            _, event, data = next(stream)
            assert (event, data["phase"], data["attempts"]) == ("running", "Running", 1)

            publish_progress(namespace, training, 10, 0.25)
            assert next(stream)[1:] == (
                "progress",
                {"step": 10, "totalSteps": 100, "loss": 0.25, "stepsRun": 10, "etaSeconds": None},
            )

            checkpoint = f"{prefix}checkpoints/000050.safetensors"
            image = f"{prefix}validation/000050/0.png"
            set_status(
                kubectl, namespace, "followed",
                {"step": 50, "checkpoints": [{"step": 50, "uri": checkpoint}],
                 "validationImages": [{"step": 50, "index": 0, "uri": image}]},
            )  # fmt: skip
            ident, event, data = next(stream)
            assert (ident, event, data["uri"]) == ("1-50-1", "checkpoint", checkpoint)
            assert "checkpoints/000050.safetensors" in data["url"]
            ident, event, data = next(stream)
            assert (ident, event, data["uri"]) == ("1-50-2", "validation", image)
            assert "X-Amz-Signature" in data["url"]

            set_status(kubectl, namespace, "followed", {"phase": "Cancelled"})
            _, event, data = next(stream)
            assert (event, data["id"], data["status"]["phase"]) == (
                "cancelled", "followed", "Cancelled",
            )  # fmt: skip
            assert next(stream, None) is None

    eventually(lambda: balance(trainer) == Decimal(1000), timeout=30, what="the refund")
    with connect() as connection:
        kinds = connection.execute(
            "select kind, amount from ledger where job_uid = %s order by id", (training["uid"],)
        ).fetchall()
    assert kinds == [("reserve", Decimal(-4)), ("refund", Decimal(4))]

    unpaid = {
        "apiVersion": "diffleet.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "unpaid", "labels": {"app.kubernetes.io/created-by": "diffleet-api"}},
        "spec": spec(dataset),
    }
    kubectl.apply(json.dumps(unpaid), namespace)

    def cancelled() -> bool:
        body = kubectl.json("get", "trainingjob", "unpaid", "-n", namespace)
        return bool(body["spec"].get("cancel"))

    eventually(cancelled, timeout=30, what="the unpaid training cancelled")
    assert (
        kubectl.json("get", "trainingjob", "followed", "-n", namespace)["spec"].get("cancel")
        is not True
    )


def pending_data() -> dict[str, Any]:
    return {
        "phase": "Pending",
        "attempts": 0,
        "step": 0,
        "stepsRun": 0,
        "loss": None,
        "preemptions": 0,
        "worker": None,
        "reason": None,
    }
