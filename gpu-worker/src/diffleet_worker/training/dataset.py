"""A training dataset read from S3: the examples the trainer takes, or a refusal.

The rules are core's (diffleet_core.datasets): the listing is checked whole before
anything is downloaded, then each image is sniffed by its bytes, bounded in pixels from
its header before it is decoded (a decompression bomb is refused, not expanded), decoded
by the sniffed format's decoder only, turned upright and flattened to RGB on white; each
caption is bounded UTF-8 text. The S3 client is the caller's, with its timeouts. The
objects' bytes come from S3 or, given the worker's DatasetCache, from its disk entry for
the same listing: the checks above run on them either way.
"""

import io
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from PIL import Image, ImageOps

from diffleet_core.datasets import (
    DatasetLimits,
    DatasetReason,
    DatasetRefusedError,
    ExampleKeys,
    check_pixels,
    dataset_location,
    parse_caption,
    select_examples,
    sniff_image,
)
from diffleet_core.storage import S3Location
from diffleet_worker import metrics
from diffleet_worker.cache.datasets import (
    DatasetCache,
    DatasetIdentity,
    DatasetSource,
    DatasetTier,
    ListedObject,
)

__all__ = ["DatasetLimits", "DatasetReason", "DatasetRefusedError", "Example", "read_dataset"]

NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
BACKGROUND = (255, 255, 255)
LIST_PAGE_SIZE = 1000


@dataclass(frozen=True)
class Example:
    image: Image.Image  # RGB
    caption: str


def read_dataset(
    s3: Any, uri: str, limits: DatasetLimits, cache: DatasetCache | None = None
) -> list[Example]:
    """The dataset's examples, sorted by image key; raises DatasetRefusedError. With a
    cache, the objects come from its disk entry for this listing when it has one (the
    same checks run on them)."""
    location = dataset_location(uri)
    objects = list_objects(s3, location)
    sizes = {key: item.size_bytes for key, item in objects.items()}
    chosen = select_examples(sizes, location.key, limits)

    def fetch(key: str) -> bytes:
        return download(s3, location.bucket, objects[key])

    source: AbstractContextManager[DatasetSource]
    if cache is None:
        source = nullcontext(DatasetSource(DatasetTier.S3, fetch))
    else:
        read = [objects[item.key] for keys in chosen for item in (keys.image, keys.caption)]
        source = cache.open(DatasetIdentity.of(location.bucket, read), fetch)
    with source as opened:
        metrics.DATASET_READS.labels(opened.tier.value).inc()
        return examples_of(chosen, opened.read, limits)


def examples_of(
    chosen: list[ExampleKeys], read: Callable[[str], bytes], limits: DatasetLimits
) -> list[Example]:
    """Each example decoded and checked from its objects' bytes, as `read` gives them."""
    examples: list[Example] = []
    total_pixels = 0
    for keys in chosen:
        image = decode_image(keys.image.key, read(keys.image.key), limits)
        total_pixels += image.width * image.height
        if total_pixels > limits.max_total_pixels:
            raise DatasetRefusedError(
                DatasetReason.TOO_LARGE,
                f"the images up to {keys.image.key} have {total_pixels} pixels in all;"
                f" at most {limits.max_total_pixels}",
            )
        caption = parse_caption(keys.caption.key, read(keys.caption.key), limits)
        examples.append(Example(image=image, caption=caption))
    return examples


def list_objects(
    s3: Any, location: S3Location, page_size: int = LIST_PAGE_SIZE
) -> dict[str, ListedObject]:
    """Every object under the prefix (all pages), by key, with its size and ETag."""
    objects: dict[str, ListedObject] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=location.bucket, Prefix=location.key, PaginationConfig={"PageSize": page_size}
    )
    try:
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                objects[key] = ListedObject(key, int(item["Size"]), str(item["ETag"]))
    except ClientError as error:
        raise_if_not_found(error, location.uri)
        raise
    return objects


def download(s3: Any, bucket: str, item: ListedObject) -> bytes:
    """The object's bytes as listed: never more than its listed size (an object replaced
    since the listing by a larger one is refused, not read whole), and only while it has
    its listed ETag (one replaced since fails the read, PreconditionFailed: what a cache
    entry keeps under this listing's key is this listing's bytes)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=item.key, IfMatch=item.etag)
    except ClientError as error:
        raise_if_not_found(error, f"s3://{bucket}/{item.key}")
        raise
    with response["Body"] as body:
        data: bytes = body.read(item.size_bytes + 1)
    if len(data) > item.size_bytes:
        raise DatasetRefusedError(
            DatasetReason.TOO_LARGE, f"{item.key} grew past its listed {item.size_bytes} bytes"
        )
    return data


def raise_if_not_found(error: ClientError, uri: str) -> None:
    if str(error.response.get("Error", {}).get("Code")) in NOT_FOUND:
        raise DatasetRefusedError(DatasetReason.NOT_FOUND, f"{uri} is not there") from error


def decode_image(key: str, data: bytes, limits: DatasetLimits) -> Image.Image:
    """The image as RGB; refused (ImageRefused, TooLarge) naming the key and the rule."""
    image_format = sniff_image(data)
    if image_format is None:
        raise DatasetRefusedError(
            DatasetReason.IMAGE_REFUSED, f"{key} is not a PNG, JPEG or WebP image by its bytes"
        )
    try:
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            check_pixels(key, image.width, image.height, limits)
            if getattr(image, "n_frames", 1) > 1:
                raise DatasetRefusedError(
                    DatasetReason.IMAGE_REFUSED, f"{key} is animated; one frame is an example"
                )
            image.load()
            upright = ImageOps.exif_transpose(image)
            return flattened(upright)
    except Image.DecompressionBombError as error:
        raise DatasetRefusedError(DatasetReason.TOO_LARGE, f"{key}: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetRefusedError(
            DatasetReason.IMAGE_REFUSED, f"{key} cannot be decoded as {image_format}: {error}"
        ) from error


def flattened(image: Image.Image) -> Image.Image:
    """RGB, transparent pixels on white (what a caption describes is the visible picture,
    not the colour stored under a transparent pixel)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")
