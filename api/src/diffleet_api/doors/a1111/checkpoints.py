"""Checkpoints as A1111 names them: the tenant's (`GET sd-models`, titled "name [hash]"),
the one a request names, and the caller's default, kept in PostgreSQL by `POST options`
(the only option this door keeps)."""

import re
from typing import Any

from diffleet_api.deps import Principal
from diffleet_api.doors.a1111 import DOOR
from diffleet_api.doors.a1111.errors import refused
from diffleet_api.doors.a1111.schemas import A1111GenerationRequest, A1111Options, A1111SdModel
from diffleet_api.doors.jobs import caller_label
from diffleet_api.errors import FieldError, invalid
from diffleet_api.model_registry import list_models
from diffleet_api.runtime import Runtime
from diffleet_core.resources.model_cache import BaseModelFamily, ModelType

HASH_LENGTH = 10  # A1111's short model hash, as the worker writes it in infotexts
TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]+\]$")


def checkpoint_name(value: str) -> str:
    """A checkpoint's ModelCache name, from its name or its A1111 title ("name [hash]")."""
    return TITLE_HASH.sub("", value.strip())


def requested_checkpoint(request: A1111GenerationRequest) -> str | None:
    chosen = (request.override_settings or {}).get("sd_model_checkpoint")
    return checkpoint_name(chosen) if isinstance(chosen, str) and chosen else None


async def checkpoints(runtime: Runtime, principal: Principal) -> list[A1111SdModel]:
    """The image checkpoints the tenant sees (its own and the platform's)."""
    listed = await list_models(runtime, principal.tenant)
    found = []
    for model in listed.items:
        if model.spec.type != ModelType.CHECKPOINT or model.spec.base_model == BaseModelFamily.SVD:
            continue
        sha256 = model.status.digest or model.spec.sha256
        short = sha256[:HASH_LENGTH] if sha256 else None
        found.append(
            A1111SdModel(
                title=f"{model.id} [{short}]" if short else model.id,
                model_name=model.id,
                hash=short,
                sha256=sha256,
                filename=model.spec.source,
            )
        )
    return found


async def default_checkpoint(runtime: Runtime, principal: Principal) -> str | None:
    """The caller's checkpoint from POST options, else the platform's door default."""
    async with runtime.pool.connection() as connection:
        cursor = await connection.execute(
            "select checkpoint from door_options"
            " where tenant_id = %s and door = %s and caller = %s",
            (principal.tenant.id, DOOR, caller_label(principal)),
        )
        row = await cursor.fetchone()
    chosen: str | None = row[0] if row else None
    return chosen or runtime.settings.door_default_model or None


async def set_default_checkpoint(runtime: Runtime, principal: Principal, value: str) -> None:
    """Checks that `value` is a checkpoint the tenant sees, then keeps it as the caller's."""
    name = checkpoint_name(value)
    if name not in {model.model_name for model in await checkpoints(runtime, principal)}:
        message = f"{name!r} is not a checkpoint this tenant sees (GET /sdapi/v1/sd-models)"
        field = FieldError(field="sd_model_checkpoint", rule="exists", message=message)
        raise invalid([field])
    async with runtime.pool.connection() as connection:
        await connection.execute(
            "insert into door_options (tenant_id, door, caller, checkpoint)"
            " values (%s, %s, %s, %s) on conflict (tenant_id, door, caller)"
            " do update set checkpoint = excluded.checkpoint, updated_at = now()",
            (principal.tenant.id, DOOR, caller_label(principal), name),
        )


async def options(runtime: Runtime, principal: Principal) -> A1111Options:
    chosen = await default_checkpoint(runtime, principal)
    if chosen is None:
        return A1111Options()
    titles = {model.model_name: model.title for model in await checkpoints(runtime, principal)}
    return A1111Options(sd_model_checkpoint=titles.get(chosen, chosen))


async def update_options(runtime: Runtime, principal: Principal, given: dict[str, Any]) -> None:
    refused_keys = [
        refused(key, "not supported; POST options takes sd_model_checkpoint")
        for key in given
        if key != "sd_model_checkpoint"
    ]
    if refused_keys:
        raise invalid(refused_keys)
    value = given.get("sd_model_checkpoint")
    if value is None:
        return
    if not isinstance(value, str):
        message = "a checkpoint's name or title"
        raise invalid([FieldError(field="sd_model_checkpoint", rule="type", message=message)])
    await set_default_checkpoint(runtime, principal, value)
