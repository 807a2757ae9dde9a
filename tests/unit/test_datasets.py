"""Training datasets' rules (diffleet_core.datasets) and the worker's decoding of an
example (diffleet_worker.training.dataset), without S3: which objects of a folder are
examples, what refuses a folder and with which reason, the bounds, and the generated
micro-shapes datasets of the trainer's tests."""

import io

import pytest
from PIL import Image

from diffleet_core.datasets import (
    DatasetLimits,
    DatasetReason,
    DatasetRefusedError,
    check_tenant_scope,
    dataset_location,
    dataset_prefix,
    parse_caption,
    select_examples,
    sniff_image,
)
from diffleet_worker.training.dataset import decode_image
from hack.models.datasets import NEW_WORD, YELLOW, shapes_dataset
from hack.models.shapes import dominant_colour

PREFIX = "team-a/datasets/ink/"
LIMITS = DatasetLimits()


def folder(*names: str, size: int = 100) -> dict[str, int]:
    return {f"{PREFIX}{name}": size for name in names}


def refusal(objects: dict[str, int], limits: DatasetLimits = LIMITS) -> DatasetRefusedError:
    with pytest.raises(DatasetRefusedError) as caught:
        select_examples(objects, PREFIX, limits)
    return caught.value


def encoded(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def test_examples_are_images_with_same_stem_captions_sorted_by_key() -> None:
    objects = folder("b.jpg", "b.txt", "a.PNG", "a.txt", "sub/c.webp", "sub/c.txt", "d.jpeg")
    objects |= folder("d.txt", "README.md", "notes.txt", "meta.json")
    examples = select_examples(objects, PREFIX, LIMITS)
    assert [(e.image.key, e.caption.key) for e in examples] == [
        (f"{PREFIX}a.PNG", f"{PREFIX}a.txt"),
        (f"{PREFIX}b.jpg", f"{PREFIX}b.txt"),
        (f"{PREFIX}d.jpeg", f"{PREFIX}d.txt"),
        (f"{PREFIX}sub/c.webp", f"{PREFIX}sub/c.txt"),
    ]


@pytest.mark.parametrize(
    ("objects", "reason", "named"),
    [
        ({}, DatasetReason.NO_IMAGES, "nothing is stored"),
        (folder("a.txt", "b.gif", "c.txt"), DatasetReason.NO_IMAGES, "b.gif"),
        (folder("a.png", "a.txt", "b.png"), DatasetReason.MISSING_CAPTIONS, "1 of 2 images"),
        (folder("a.png", "a.txt", "sub/a.txt", "b/a.png"), DatasetReason.MISSING_CAPTIONS, "b/a"),
        (folder("a.png", "a.jpg", "a.txt"), DatasetReason.AMBIGUOUS_CAPTIONS, "a.jpg and"),
        (folder("a.png", "a.txt", "model.ckpt"), DatasetReason.PICKLE_FILE, "model.ckpt"),
        (folder("a.png", "a.txt", "x/state.PT"), DatasetReason.PICKLE_FILE, "state.PT"),
    ],
)
def test_refused_folders_name_the_rule_and_the_objects(
    objects: dict[str, int], reason: DatasetReason, named: str
) -> None:
    refused = refusal(objects)
    assert refused.reason is reason
    assert named in refused.message


def test_a_pickle_refuses_before_anything_else() -> None:
    assert refusal(folder("model.bin")).reason is DatasetReason.PICKLE_FILE


def test_a_long_list_of_offenders_is_named_in_short() -> None:
    refused = refusal(folder(*(f"{index:02}.png" for index in range(12))))
    assert refused.message.endswith("and 7 more")


def test_bounds_from_the_listing() -> None:
    limits = DatasetLimits(max_images=2, max_image_bytes=1000, max_total_bytes=1500)
    many = folder("1.png", "1.txt", "2.png", "2.txt", "3.png", "3.txt")
    assert refusal(many, limits).reason is DatasetReason.TOO_MANY_IMAGES
    assert refusal(folder("1.png", "1.txt", size=1001), limits).reason is DatasetReason.TOO_LARGE
    total = refusal(folder("1.png", "1.txt", "2.png", "2.txt", size=400), limits)
    assert (total.reason, "1600 bytes" in total.message) == (DatasetReason.TOO_LARGE, True)
    caption = {f"{PREFIX}1.png": 10, f"{PREFIX}1.txt": LIMITS.max_caption_bytes + 1}
    assert refusal(caption).reason is DatasetReason.CAPTION_REFUSED


def test_the_tenant_prefix_convention() -> None:
    assert dataset_prefix("team-a", "ink") == PREFIX
    uri = f"s3://diffleet-uploads/{PREFIX}"
    assert check_tenant_scope(uri.rstrip("/"), "team-a", "diffleet-uploads").key == PREFIX
    outside = [
        "s3://diffleet-uploads/team-b/datasets/ink/",
        "s3://diffleet-uploads/team-ab/datasets/ink/",
        "s3://diffleet-models/team-a/datasets/ink/",
        "s3://diffleet-uploads/team-a/datasets/",
        "s3://diffleet-uploads/team-a/ink/",
        "s3://diffleet-uploads/team-a/datasets/../../team-b/datasets/ink/",
    ]
    for other in outside:
        with pytest.raises(DatasetRefusedError) as caught:
            check_tenant_scope(other, "team-a", "diffleet-uploads")
        assert caught.value.reason is DatasetReason.OUTSIDE_NAMESPACE, other


def test_a_dataset_uri_is_an_s3_folder() -> None:
    assert dataset_location("s3://bucket/ink").key == "ink/"
    with pytest.raises(DatasetRefusedError) as caught:
        dataset_location("https://bucket/ink/")
    assert caught.value.reason is DatasetReason.INVALID_URI


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"a zorp circle\n", "a zorp circle"),
        ("\ufeffune forme jaune, été".encode(), "une forme jaune, été"),
        (b"two\nlines", "two\nlines"),
    ],
)
def test_captions_are_stripped_utf8(data: bytes, text: str) -> None:
    assert parse_caption("1.txt", data, LIMITS) == text


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"\xff\xfecaption", "not UTF-8"),
        (b"  \n ", "empty"),
        (b"x" * 2001, "2001 characters"),
        (b"bell\x07", "control characters"),
    ],
)
def test_refused_captions(data: bytes, rule: str) -> None:
    with pytest.raises(DatasetRefusedError) as caught:
        parse_caption("1.txt", data, LIMITS)
    assert caught.value.reason is DatasetReason.CAPTION_REFUSED
    assert rule in caught.value.message


def test_images_are_sniffed_by_their_bytes_not_their_name() -> None:
    red = Image.new("RGB", (8, 8), (200, 0, 0))
    assert sniff_image(encoded(red, "PNG")) == "PNG"
    assert sniff_image(encoded(red, "JPEG")) == "JPEG"
    assert sniff_image(encoded(red, "WEBP")) == "WEBP"
    assert sniff_image(encoded(red, "GIF")) is None
    # A JPEG named .png is read as the JPEG it is.
    decoded = decode_image("a.png", encoded(red, "JPEG"), LIMITS)
    assert (decoded.mode, decoded.size) == ("RGB", (8, 8))


@pytest.mark.parametrize(
    ("data", "reason", "rule"),
    [
        (b"a zorp circle", DatasetReason.IMAGE_REFUSED, "not a PNG, JPEG or WebP"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, DatasetReason.IMAGE_REFUSED, "cannot be decoded"),
        # 3000x3000 black pixels in a few kilobytes: refused from the header.
        (encoded(Image.new("L", (3000, 3000)), "PNG"), DatasetReason.TOO_LARGE, "9000000 pixels"),
    ],
)
def test_refused_images(data: bytes, reason: DatasetReason, rule: str) -> None:
    with pytest.raises(DatasetRefusedError) as caught:
        decode_image("x.png", data, LIMITS)
    assert caught.value.reason is reason
    assert rule in caught.value.message


def test_animated_images_are_refused() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    data = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(DatasetRefusedError) as caught:
        decode_image("x.png", data, LIMITS)
    assert (caught.value.reason, "animated" in caught.value.message) == (
        DatasetReason.IMAGE_REFUSED,
        True,
    )


def test_transparency_is_flattened_on_white_and_exif_turns_upright() -> None:
    clear = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    assert decode_image("a.png", encoded(clear, "PNG"), LIMITS).getpixel((0, 0)) == (255,) * 3
    wide = Image.new("RGB", (4, 2), (0, 0, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to view.
    assert decode_image("a.jpg", encoded(wide, "JPEG", exif=exif), LIMITS).size == (2, 4)


def test_shapes_datasets_are_seeded_yellow_and_captioned_with_the_new_word() -> None:
    examples = shapes_dataset(YELLOW, NEW_WORD, 6, seed=3)
    again = shapes_dataset(YELLOW, NEW_WORD, 6, seed=3)
    assert [(image.tobytes(), text) for image, text in examples] == [
        (image.tobytes(), text) for image, text in again
    ]
    assert {dominant_colour(image) for image, _ in examples} == {"yellow"}
    assert {text.rsplit(" ", 1)[0] for _, text in examples} == {"a zorp"}
    circles = shapes_dataset(YELLOW, NEW_WORD, 4, seed=3, kinds=("circle",))
    assert {text for _, text in circles} == {"a zorp circle"}
    assert shapes_dataset(YELLOW, NEW_WORD, 6, seed=4)[0][0].tobytes() != examples[0][0].tobytes()
