"""The pure parts of the API's training doors: a training's price, a dataset upload's
files (a zip's bounds before expanding, a list's names and captions), its checks and
cleaning by core.datasets' rules, the events a training's status makes for its stream,
and which phases the training watcher settles."""

import io
import zipfile
from decimal import Decimal
from typing import Any, cast

import pytest
from PIL import Image

from diffleet_api.dataset_uploads import (
    DatasetFile,
    check_path,
    listed_files,
    prepared,
    zip_files,
)
from diffleet_api.errors import InvalidError, TooLargeError
from diffleet_api.runtime import Runtime
from diffleet_api.training_events import Seen, status_events
from diffleet_api.training_watcher import ending
from diffleet_core.datasets import DatasetLimits
from diffleet_core.pricing import training_cost
from diffleet_core.resources.training_job import TrainingJobSpec
from tests.support.pictures import png_bytes

LIMITS = DatasetLimits()
MAX_PIXELS = 2048 * 2048


def square(colour: str = "blue", side: int = 16) -> bytes:
    return png_bytes(Image.new("RGB", (side, side), colour))


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def refused(error: pytest.ExceptionInfo[InvalidError]) -> tuple[str, str, str]:
    assert error.value.errors is not None
    [found] = error.value.errors
    return found.field, found.rule, found.message


# ------------------------------------------------------------ price


@pytest.mark.parametrize(
    ("fields", "credits"),
    [
        ({"steps": 500}, "10.00"),
        ({"steps": 100, "batchSize": 2}, "4.00"),
        ({"steps": 500, "resolution": 768, "batchSize": 2}, "45.00"),
        ({"steps": 1, "resolution": 64}, "0.01"),  # 0.0003125, never free by rounding
        ({"steps": 100000, "resolution": 2048, "batchSize": 64}, "2048000.00"),
    ],
)
def test_a_training_costs_steps_times_its_pixels_times_its_batch(
    fields: dict[str, Any], credits: str
) -> None:
    spec = TrainingJobSpec.model_validate(
        {"baseModel": "m", "dataset": "s3://uploads/team/datasets/d/", "output": {"name": "o"}}
        | fields
    )
    assert training_cost(spec, Decimal("0.02")) == Decimal(credits)


# ------------------------------------------------------------ a zip's files


def test_a_zip_gives_its_files_without_folders_hidden_files_or_an_archivers_own() -> None:
    archive = zipped(
        {
            "set/1.png": b"a",
            "set/.DS_Store": b"b",
            "__MACOSX/set/._1.png": b"c",
            "set/1.txt": b"d",
        }
    )
    files = zip_files(archive, LIMITS, 1024)
    assert files == [DatasetFile("set/1.png", b"a"), DatasetFile("set/1.txt", b"d")]


def test_a_zip_is_bounded_in_entries_and_uncompressed_bytes_before_it_is_expanded() -> None:
    small = DatasetLimits(max_images=2)
    with pytest.raises(InvalidError) as crowded:
        zip_files(zipped({f"{index}.txt": b"x" for index in range(105)}), small, 10**6)
    assert refused(crowded)[:2] == ("archive", "maxEntries")
    with pytest.raises(TooLargeError, match="1001 bytes uncompressed; at most 1000"):
        zip_files(zipped({"1.png": bytes(1000), "1.txt": b"x"}), LIMITS, 1000)


@pytest.mark.parametrize(
    "path", ["../1.png", "/etc/1.png", "a/../../1.png", "a//1.png", "a/.hidden/1.png", "a\\1.png"]
)
def test_a_path_that_leaves_its_folder_or_hides_is_refused(path: str) -> None:
    with pytest.raises(InvalidError) as caught:
        check_path(path, "archive")
    field, rule, message = refused(caught)
    assert (field, rule) == ("archive", "fileName")
    assert repr(path) in message


def test_what_is_not_a_zip_is_refused_naming_the_archive() -> None:
    with pytest.raises(InvalidError) as caught:
        zip_files(b"PK\x03\x04 not a zip", LIMITS, 1024)
    assert refused(caught)[:2] == ("archive", "zip")


# ------------------------------------------------------------ a list's files


def test_a_list_puts_each_caption_beside_its_image() -> None:
    files = listed_files([("a.png", b"1"), ("b.JPG", b"2")], ["one", "two"], LIMITS)
    assert files == [
        DatasetFile("a.png", b"1"),
        DatasetFile("a.txt", b"one"),
        DatasetFile("b.JPG", b"2"),
        DatasetFile("b.txt", b"two"),
    ]


@pytest.mark.parametrize(
    ("images", "captions", "field", "rule"),
    [
        ([("a.png", b"1")], ["one", "two"], "captions", "sameLength"),
        ([("a.png", b"1"), ("a.jpg", b"2")], ["one", "two"], "images[1]", "unique"),
        ([("a.gif", b"1")], ["one"], "images[0]", "fileName"),
        ([("", b"1")], ["one"], "images[0]", "fileName"),
        ([("../a.png", b"1")], ["one"], "images[0]", "fileName"),
    ],
    ids=["uneven", "same-stem", "not-an-image-name", "no-name", "traversal"],
)
def test_a_list_refusal_names_the_image(
    images: list[tuple[str, bytes]], captions: list[str], field: str, rule: str
) -> None:
    with pytest.raises(InvalidError) as caught:
        listed_files(images, captions, LIMITS)
    assert refused(caught)[:2] == (field, rule)


# ------------------------------------------------------------ checks and cleaning


def test_a_dataset_is_stored_as_its_examples_each_image_cleaned_and_caption_parsed() -> None:
    files = [
        DatasetFile("1.png", square()),
        DatasetFile("1.txt", b"\xef\xbb\xbf  a zorp circle \n"),
        DatasetFile("README.md", b"ignored"),
    ]
    stored = prepared(files, LIMITS, MAX_PIXELS, "archive")
    assert set(stored) == {"1.png", "1.txt"}
    assert stored["1.txt"] == b"a zorp circle"
    with Image.open(io.BytesIO(stored["1.png"])) as image:
        assert (image.format, image.size) == ("PNG", (16, 16))


@pytest.mark.parametrize(
    ("files", "limits", "field", "rule", "named"),
    [
        ([DatasetFile("1.png", square())], LIMITS, "archive", "MissingCaptions", "1.png"),
        ([DatasetFile("x.ckpt", b"")], LIMITS, "archive", "PickleFile", "x.ckpt"),
        ([DatasetFile("1.png", b"GIF89a"), DatasetFile("1.txt", b"x")], LIMITS, "1.png",
         "ImageRefused", "not a PNG, JPEG or WebP"),
        ([DatasetFile("1.png", square()), DatasetFile("1.txt", b"\xff")], LIMITS, "1.txt",
         "CaptionRefused", "not UTF-8"),
        ([DatasetFile("1.png", square(side=64)), DatasetFile("1.txt", b"x")],
         DatasetLimits(max_pixels=32 * 32), "1.png", "ImageRefused", "at most 1024"),
        ([DatasetFile(f"{i}.png", square()) for i in range(2)]
         + [DatasetFile(f"{i}.txt", b"x") for i in range(2)],
         DatasetLimits(max_total_pixels=300), "archive", "TooLarge", "512 pixels"),
    ],
    ids=["missing-caption", "pickle", "not-an-image", "caption-not-utf8", "too-many-pixels",
         "total-pixels"],
)  # fmt: skip
def test_a_dataset_breaking_a_rule_is_refused_naming_the_file(
    files: list[DatasetFile], limits: DatasetLimits, field: str, rule: str, named: str
) -> None:
    with pytest.raises(InvalidError) as caught:
        prepared(files, limits, MAX_PIXELS, "archive")
    found_field, found_rule, message = refused(caught)
    assert (found_field, found_rule) == (field, rule)
    assert named in message


# ------------------------------------------------------------ the stream's events


class FakeS3:
    def generate_presigned_url(self, _: str, Params: dict[str, str], ExpiresIn: int) -> str:  # noqa: N803
        return f"https://s3.test/{Params['Bucket']}/{Params['Key']}?expires={ExpiresIn}"


class FakeRuntime:
    class platform:  # noqa: N801
        class buckets:  # noqa: N801
            outputs = "outputs"

    class settings:  # noqa: N801
        presign_seconds = 60

    s3 = FakeS3()


RUNTIME = cast(Runtime, FakeRuntime())
PREFIX = "s3://outputs/team/trainings/t/uid-1/"


def training(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "t",
            "uid": "uid-1",
            "namespace": "team",
            "creationTimestamp": "2026-12-02T10:00:00Z",
        },
        "spec": {"baseModel": "m", "dataset": "s3://up/team/datasets/d/", "output": {"name": "o"}},
        "status": status,
    }


def test_a_status_gives_its_new_checkpoints_images_and_phase_once() -> None:
    seen = Seen()
    [pending] = status_events(RUNTIME, training({}), seen)
    assert (pending.name, pending.data["phase"]) == ("pending", "Pending")

    running = training(
        {
            "phase": "Running",
            "attempts": 2,
            "step": 50,
            "checkpoints": [{"step": 50, "uri": f"{PREFIX}checkpoints/000050.safetensors"}],
            "validationImages": [
                {"step": 50, "index": 0, "uri": f"{PREFIX}validation/000050/0.png"},
                {"step": 50, "index": 1, "uri": "s3://outputs/other/trainings/x/y/0.png"},
            ],
        }
    )
    events = status_events(RUNTIME, running, seen)
    assert [(event.name, event.id) for event in events] == [
        ("checkpoint", (2, 50, 1)),
        ("validation", (2, 50, 2)),
        ("validation", (2, 50, 2)),
        ("running", (2, 50, 3)),
    ]
    assert events[0].data["url"].startswith("https://s3.test/outputs/team/trainings/t/uid-1/")
    assert "url" not in events[2].data  # not under the training's prefix: never signed
    assert status_events(RUNTIME, running, seen) == []

    done = status_events(RUNTIME, training(running["status"] | {"phase": "Succeeded"}), seen)
    assert [(event.name, event.last) for event in done] == [("succeeded", True)]
    assert done[0].data["id"] == "t"


@pytest.mark.parametrize(
    ("kind", "phase", "ended"),
    [
        ("MODIFIED", "Running", None),
        ("MODIFIED", None, None),
        ("MODIFIED", "Succeeded", "Succeeded"),
        ("MODIFIED", "Cancelled", "Cancelled"),
        ("DELETED", "Queued", "Deleted"),
        ("DELETED", "Failed", "Failed"),
    ],
)
def test_the_watcher_settles_a_training_at_its_end_only(
    kind: str, phase: str | None, ended: str | None
) -> None:
    body = {"status": {"phase": phase} if phase else {}}
    assert ending(kind, body) == ended
