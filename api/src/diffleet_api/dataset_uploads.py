"""Training datasets uploaded through the API: a zip of a folder, or a list of images and
their captions, stored at the tenant's dataset prefix of the uploads bucket
(core.datasets.dataset_prefix), where a TrainingJob's spec.dataset names it.

Every rule of core.datasets is enforced before anything is stored, so a dataset the API
took is one the operator and the worker take: the examples (an image and its same-name
caption), pickles refused, the bounds. Each image is cleaned as an upload is
(images.sanitize: sniffed, bounded, re-encoded without metadata) and each caption stored
as the UTF-8 text parse_caption reads. A zip is read with bounds first: its entries'
count and their declared sizes in all, then each entry read no further than it declared
(a zip bomb is refused before it is expanded).
"""

import asyncio
import io
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

from diffleet_api.errors import (
    ConflictError,
    FieldError,
    InvalidError,
    NotFoundError,
    TooLargeError,
)
from diffleet_api.images import ImageRefusedError, sanitize
from diffleet_api.objects import s3_call
from diffleet_api.runtime import Runtime
from diffleet_api.schemas import DatasetPublic
from diffleet_api.tenants import Tenant
from diffleet_api.trainings import listing
from diffleet_core.datasets import (
    CAPTION_SUFFIX,
    DATASETS_FOLDER,
    DatasetLimits,
    DatasetRefusedError,
    ExampleKeys,
    dataset_prefix,
    is_image_key,
    parse_caption,
    select_examples,
    stem,
)
from diffleet_core.storage import tenant_prefix

DATASET_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# A path segment of a file in a dataset: no leading dot (hidden files, "..").
FILE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._ -]{0,127}")
# Entries of a zip besides two per image: folders, a README, what an OS adds.
EXTRA_ENTRIES = 100
# Folders an archiver adds that are never part of a dataset.
IGNORED_FOLDERS = ("__MACOSX/",)
STORE_CONCURRENCY = 8
DELETE_BATCH = 1000


@dataclass(frozen=True)
class DatasetFile:
    path: str
    data: bytes


def refused(field: str, rule: str, message: str) -> InvalidError:
    return InvalidError(message, errors=[FieldError(field=field, rule=rule, message=message)])


def check_path(path: str, field: str) -> None:
    """A relative path of plain segments (no "..", no absolute path, no hidden file)."""
    segments = path.split("/")
    if not all(FILE_SEGMENT.fullmatch(segment) for segment in segments):
        raise refused(
            field,
            "fileName",
            f"{path!r}: each part of a file's path is letters, digits, '.', '_', '-' or"
            " spaces, not starting with '.' or a space",
        )


# ------------------------------------------------------------ reading the request


def zip_files(archive: bytes, limits: DatasetLimits, max_bytes: int) -> list[DatasetFile]:
    """The files of a zip (folders, hidden files and an archiver's own folders left
    out), bounded in count and uncompressed bytes before any is expanded."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as opened:
            entries = [
                entry
                for entry in opened.infolist()
                if not entry.is_dir()
                and not entry.filename.startswith(IGNORED_FOLDERS)
                and not entry.filename.rpartition("/")[2].startswith(".")
            ]
            check_entries(entries, limits, max_bytes)
            return [DatasetFile(entry.filename, read_entry(opened, entry)) for entry in entries]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as error:
        raise refused("archive", "zip", f"the archive is not a readable zip: {error}") from error


def check_entries(entries: list[zipfile.ZipInfo], limits: DatasetLimits, max_bytes: int) -> None:
    most = 2 * limits.max_images + EXTRA_ENTRIES
    if len(entries) > most:
        raise refused("archive", "maxEntries", f"the zip has {len(entries)} files; at most {most}")
    declared = sum(entry.file_size for entry in entries)
    if declared > max_bytes:
        raise TooLargeError(
            f"the zip's files are {declared} bytes uncompressed; at most {max_bytes}"
        )
    for entry in entries:
        check_path(entry.filename, "archive")
        if entry.flag_bits & 0x1:
            raise refused("archive", "encrypted", f"{entry.filename} is encrypted")


def read_entry(opened: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bytes:
    """The entry's bytes, refused when they run past the size it declared."""
    with opened.open(entry) as member:
        data = member.read(entry.file_size + 1)
    if len(data) > entry.file_size:
        raise refused(
            "archive", "fileSize", f"{entry.filename} holds more than the {entry.file_size}"
            " bytes it declares",
        )  # fmt: skip
    return data


def listed_files(
    images: list[tuple[str, bytes]], captions: list[str], limits: DatasetLimits
) -> list[DatasetFile]:
    """The files of a list upload: each image under its file name, the caption of the
    same position beside it as <stem>.txt."""
    if len(images) != len(captions):
        raise refused(
            "captions",
            "sameLength",
            f"{len(images)} images and {len(captions)} captions: send one caption per image,"
            " in the same order",
        )
    if len(images) > limits.max_images:
        raise refused(
            "images", "TooManyImages", f"{len(images)} images; at most {limits.max_images}"
        )
    files = []
    names: set[str] = set()
    for index, (name, data) in enumerate(images):
        field = f"images[{index}]"
        check_path(name, field)
        if "/" in name or not is_image_key(name):
            raise refused(
                field, "fileName", f"{name!r}: an image's file name ends in .png, .jpg,"
                " .jpeg or .webp",
            )  # fmt: skip
        if stem(name) in names:
            raise refused(field, "unique", f"{name!r}: another image has the name {stem(name)!r}")
        names.add(stem(name))
        files.append(DatasetFile(name, data))
        files.append(DatasetFile(stem(name) + CAPTION_SUFFIX, captions[index].encode()))
    return files


# ------------------------------------------------------------ checking and cleaning


def prepared(
    files: list[DatasetFile], limits: DatasetLimits, max_pixels: int, field: str
) -> dict[str, bytes]:
    """What to store (relative path to bytes): the examples by core.datasets' rules,
    each image cleaned and each caption parsed; refused naming the file and the rule."""
    contents = {file.path: file.data for file in files}
    try:
        examples = select_examples({path: len(data) for path, data in contents.items()}, "", limits)
    except DatasetRefusedError as error:
        raise refused(field, error.reason.value, error.message) from error
    stored: dict[str, bytes] = {}
    pixels = 0
    for example in examples:
        image, width_height = cleaned(example, contents, min(max_pixels, limits.max_pixels))
        pixels += width_height
        stored[example.image.key] = image
        stored[example.caption.key] = caption_text(example, contents, limits).encode()
    if pixels > limits.max_total_pixels:
        raise refused(
            field, "TooLarge", f"the images hold {pixels} pixels; at most {limits.max_total_pixels}"
        )
    return stored


def cleaned(
    example: ExampleKeys, contents: Mapping[str, bytes], max_pixels: int
) -> tuple[bytes, int]:
    """The image re-encoded without metadata, and its pixels."""
    path = example.image.key
    try:
        image = sanitize(contents[path], max_pixels)
    except ImageRefusedError as error:
        raise refused(path, "ImageRefused", f"{path}: {error.message}") from error
    return image.data, image.width * image.height


def caption_text(example: ExampleKeys, contents: Mapping[str, bytes], limits: DatasetLimits) -> str:
    path = example.caption.key
    try:
        return parse_caption(path, contents[path], limits)
    except DatasetRefusedError as error:
        raise refused(path, error.reason.value, error.message) from error


# ------------------------------------------------------------ storing, listing, deleting


def dataset_uri(runtime: Runtime, namespace: str, name: str) -> str:
    return f"s3://{runtime.platform.buckets.uploads}/{dataset_prefix(namespace, name)}"


async def store(
    runtime: Runtime, tenant: Tenant, name: str, files: list[DatasetFile], field: str
) -> DatasetPublic:
    """Checks, cleans and stores the dataset; 409 when the name is taken (DELETE it
    first), 422 naming the file and the rule."""
    bucket = runtime.platform.buckets.uploads
    prefix = dataset_prefix(tenant.namespace, name)
    max_pixels = runtime.settings.tier_limits[tenant.tier].upload_max_pixels
    stored = await asyncio.to_thread(prepared, files, DatasetLimits(), max_pixels, field)
    if await listing(runtime, bucket, prefix):
        raise ConflictError(f"dataset {name!r} exists; DELETE /v1/datasets/{name} first")
    gate = asyncio.Semaphore(STORE_CONCURRENCY)

    async def put(path: str, data: bytes) -> None:
        async with gate:
            await s3_call(
                f"store {prefix}{path}", runtime.s3.put_object,
                Bucket=bucket, Key=f"{prefix}{path}", Body=data,
            )  # fmt: skip

    await asyncio.gather(*(put(path, data) for path, data in stored.items()))
    return DatasetPublic(
        name=name,
        uri=dataset_uri(runtime, tenant.namespace, name),
        examples=len(stored) // 2,
        size_bytes=sum(len(data) for data in stored.values()),
    )


async def list_datasets(runtime: Runtime, tenant: Tenant) -> list[DatasetPublic]:
    """The tenant's datasets by name, from one listing of its datasets folder."""
    scope = f"{tenant_prefix(tenant.namespace)}{DATASETS_FOLDER}/"
    objects = await listing(runtime, runtime.platform.buckets.uploads, scope)
    sizes: dict[str, int] = {}
    images: dict[str, int] = {}
    for key, size in objects.items():
        name, _, rest = key.removeprefix(scope).partition("/")
        sizes[name] = sizes.get(name, 0) + size
        images[name] = images.get(name, 0) + int(is_image_key(rest))
    return [
        DatasetPublic(
            name=name,
            uri=dataset_uri(runtime, tenant.namespace, name),
            examples=images[name],
            size_bytes=sizes[name],
        )
        for name in sorted(sizes)
    ]


async def delete(runtime: Runtime, tenant: Tenant, name: str) -> None:
    """Deletes every object of the dataset; 404 when there is none."""
    bucket = runtime.platform.buckets.uploads
    prefix = dataset_prefix(tenant.namespace, name)
    keys = sorted(await listing(runtime, bucket, prefix))
    if not keys:
        raise NotFoundError(f"no dataset {name!r}")
    for start in range(0, len(keys), DELETE_BATCH):
        batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
        await s3_call(
            f"delete {prefix}", runtime.s3.delete_objects,
            Bucket=bucket, Delete={"Objects": batch, "Quiet": True},
        )  # fmt: skip
