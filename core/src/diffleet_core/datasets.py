"""Training datasets (issue 20): which objects of an S3 folder are examples, what is
refused and why, and the bounds. Pure, so the operator's admission (from a listing) and
the worker (before and while downloading) refuse the same folders with the same words.

A dataset is a folder, `s3://<uploads>/<namespace>/datasets/<name>/` by convention: every
image (.png, .jpg, .jpeg or .webp, in any case, in the folder or below it) with a
same-stem .txt caption beside it (`cat/1.png` and `cat/1.txt`). The rules:
- Pickle files anywhere refuse the whole folder (PickleFile): nothing in a dataset is
  code, and a pickle there means the URI points at the wrong folder.
- Other files (a README, a .json, a .txt without an image) are ignored.
- An image without its caption refuses the folder (MissingCaptions): every spec trains
  on captions; two images of one stem (`1.png`, `1.jpg`) would share one (AmbiguousCaptions).
- The bounds (DatasetLimits) are those of uploads where uploads have one (20 MiB and
  2048x2048 pixels an image), plus the dataset's own: its image count, its bytes and its
  pixels in all (the worker holds the decoded examples in memory).
- An image is what its bytes say (sniffed), whatever its name; its caption is UTF-8 text.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from diffleet_core.resources.generation_job import MAX_PROMPT_LENGTH
from diffleet_core.storage import S3Location, is_pickle, tenant_prefix

DATASETS_FOLDER = "datasets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTION_SUFFIX = ".txt"
# Named in a refusal's message, so a long list of offenders stays a short message.
NAMED_IN_MESSAGE = 5

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


class DatasetReason(StrEnum):
    """Why a dataset is refused: the reason a TrainingJob's condition carries."""

    INVALID_URI = "InvalidDatasetUri"
    OUTSIDE_NAMESPACE = "DatasetOutsideNamespace"
    NOT_FOUND = "DatasetNotFound"
    NO_IMAGES = "NoImages"
    MISSING_CAPTIONS = "MissingCaptions"
    AMBIGUOUS_CAPTIONS = "AmbiguousCaptions"
    PICKLE_FILE = "PickleFile"
    TOO_MANY_IMAGES = "TooManyImages"
    TOO_LARGE = "TooLarge"
    IMAGE_REFUSED = "ImageRefused"
    CAPTION_REFUSED = "CaptionRefused"


class DatasetRefusedError(Exception):
    """The dataset cannot be trained on; `reason` for a condition, `message` names the
    objects and the rule."""

    def __init__(self, reason: DatasetReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class DatasetLimits:
    max_images: int = 1000
    max_image_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 2 * 1024**3
    max_pixels: int = 2048 * 2048
    max_total_pixels: int = 512 * 1024 * 1024
    max_caption_chars: int = MAX_PROMPT_LENGTH

    @property
    def max_caption_bytes(self) -> int:
        """A caption's bound in bytes before it is decoded: 4 UTF-8 bytes a character."""
        return 4 * self.max_caption_chars


@dataclass(frozen=True)
class DatasetObject:
    key: str
    size_bytes: int


@dataclass(frozen=True)
class ExampleKeys:
    image: DatasetObject
    caption: DatasetObject


def dataset_prefix(namespace: str, name: str) -> str:
    """Key prefix, in the uploads bucket, of a tenant's dataset called `name`."""
    return f"{tenant_prefix(namespace)}{DATASETS_FOLDER}/{name}/"


def dataset_location(uri: str) -> S3Location:
    """The dataset's bucket and folder prefix (always ending in "/", so `ink` never
    takes in `ink-2`); refused (InvalidDatasetUri) when not an s3:// folder."""
    try:
        location = S3Location.parse(uri)
    except ValueError as error:
        raise DatasetRefusedError(DatasetReason.INVALID_URI, str(error)) from error
    key = location.key if location.key.endswith("/") else f"{location.key}/"
    return S3Location(bucket=location.bucket, key=key)


def check_tenant_scope(uri: str, namespace: str, uploads_bucket: str) -> S3Location:
    """The dataset's location when it lies under the namespace's datasets folder of the
    uploads bucket; refused (DatasetOutsideNamespace) otherwise, so a tenant trains only
    on its own uploads."""
    location = dataset_location(uri)
    scope = f"{tenant_prefix(namespace)}{DATASETS_FOLDER}/"
    inside = location.bucket == uploads_bucket and location.key.startswith(scope)
    if not inside or len(location.key) == len(scope) or ".." in location.key.split("/"):
        raise DatasetRefusedError(
            DatasetReason.OUTSIDE_NAMESPACE,
            f"dataset {uri!r} is not a folder under s3://{uploads_bucket}/{scope}",
        )
    return location


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


def stem(key: str) -> str:
    """The key without its last suffix: an image's and its caption's common part."""
    name_start = key.rfind("/") + 1
    dot = key.rfind(".")
    return key[:dot] if dot > name_start else key


def select_examples(
    objects: Mapping[str, int], prefix: str, limits: DatasetLimits
) -> list[ExampleKeys]:
    """The examples of a folder's listing (key to size in bytes), sorted by image key;
    raises DatasetRefusedError by the rules above, checked in the order they are listed
    there, so a folder breaking several gets the first."""
    refuse_pickles(objects)
    images = sorted(key for key in objects if is_image_key(key))
    if not images:
        refuse_empty(objects, prefix)
    if len(images) > limits.max_images:
        raise DatasetRefusedError(
            DatasetReason.TOO_MANY_IMAGES,
            f"{len(images)} images under {prefix!r}; at most {limits.max_images}",
        )
    refuse_ambiguous(images)
    captions = {stem(key): key for key in objects if key.lower().endswith(CAPTION_SUFFIX)}
    missing = [key for key in images if stem(key) not in captions]
    if missing:
        raise DatasetRefusedError(
            DatasetReason.MISSING_CAPTIONS,
            f"{len(missing)} of {len(images)} images have no same-name {CAPTION_SUFFIX}"
            f" caption: {named(missing)}",
        )
    examples = [
        ExampleKeys(
            image=DatasetObject(key, objects[key]),
            caption=DatasetObject(captions[stem(key)], objects[captions[stem(key)]]),
        )
        for key in images
    ]
    check_sizes(examples, limits)
    return examples


def refuse_pickles(objects: Mapping[str, int]) -> None:
    pickles = sorted(key for key in objects if is_pickle(key))
    if pickles:
        raise DatasetRefusedError(
            DatasetReason.PICKLE_FILE,
            f"pickle files are never read and refuse a dataset: {named(pickles)}",
        )


def refuse_empty(objects: Mapping[str, int], prefix: str) -> None:
    if not objects:
        raise DatasetRefusedError(DatasetReason.NO_IMAGES, f"nothing is stored under {prefix!r}")
    raise DatasetRefusedError(
        DatasetReason.NO_IMAGES,
        f"no .png, .jpg, .jpeg or .webp under {prefix!r}, only: {named(sorted(objects))}",
    )


def refuse_ambiguous(images: list[str]) -> None:
    by_stem: dict[str, list[str]] = {}
    for key in images:
        by_stem.setdefault(stem(key), []).append(key)
    shared = [keys for keys in by_stem.values() if len(keys) > 1]
    if shared:
        raise DatasetRefusedError(
            DatasetReason.AMBIGUOUS_CAPTIONS,
            f"images share a caption's name: {named([' and '.join(keys) for keys in shared])}",
        )


def check_sizes(examples: list[ExampleKeys], limits: DatasetLimits) -> None:
    """The byte bounds, from the listing alone (before anything is downloaded)."""
    for example in examples:
        check_image_bytes(example.image.key, example.image.size_bytes, limits)
        if example.caption.size_bytes > limits.max_caption_bytes:
            raise DatasetRefusedError(
                DatasetReason.CAPTION_REFUSED,
                f"{example.caption.key} is {example.caption.size_bytes} bytes;"
                f" at most {limits.max_caption_bytes}",
            )
    total = sum(example.image.size_bytes + example.caption.size_bytes for example in examples)
    if total > limits.max_total_bytes:
        raise DatasetRefusedError(
            DatasetReason.TOO_LARGE,
            f"the dataset is {total} bytes; at most {limits.max_total_bytes}",
        )


def check_image_bytes(key: str, size_bytes: int, limits: DatasetLimits) -> None:
    if size_bytes > limits.max_image_bytes:
        raise DatasetRefusedError(
            DatasetReason.TOO_LARGE,
            f"{key} is {size_bytes} bytes; at most {limits.max_image_bytes}",
        )


def check_pixels(key: str, width: int, height: int, limits: DatasetLimits) -> None:
    """An image's pixel bound, from its header before a pixel is decoded."""
    if width * height > limits.max_pixels:
        raise DatasetRefusedError(
            DatasetReason.TOO_LARGE,
            f"{key} is {width}x{height}, {width * height} pixels; at most {limits.max_pixels}",
        )


def sniff_image(data: bytes) -> str | None:
    """The image format the bytes are by their magic numbers (Pillow's name: PNG, JPEG,
    WEBP), None for anything else."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def parse_caption(key: str, data: bytes, limits: DatasetLimits) -> str:
    """The caption's text: UTF-8 (a byte-order mark dropped), surrounding whitespace
    stripped, not empty, at most `max_caption_chars` characters."""
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as error:
        raise DatasetRefusedError(
            DatasetReason.CAPTION_REFUSED, f"{key} is not UTF-8 text: {error}"
        ) from error
    if not text:
        raise DatasetRefusedError(DatasetReason.CAPTION_REFUSED, f"{key} is empty")
    if len(text) > limits.max_caption_chars:
        raise DatasetRefusedError(
            DatasetReason.CAPTION_REFUSED,
            f"{key} has {len(text)} characters; at most {limits.max_caption_chars}",
        )
    if any(ord(char) < 32 and char not in "\t\n\r" for char in text):
        raise DatasetRefusedError(DatasetReason.CAPTION_REFUSED, f"{key} holds control characters")
    return text


def named(keys: list[str]) -> str:
    """The first few keys, and how many more."""
    shown = ", ".join(keys[:NAMED_IN_MESSAGE])
    more = len(keys) - NAMED_IN_MESSAGE
    return f"{shown} and {more} more" if more > 0 else shown
