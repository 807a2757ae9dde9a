"""A1111's error dialect: every error under PREFIX in its shape (`{error, detail, body,
errors}`) with diffleet's statuses, the spec's fields named as the A1111 request names
them, and the door's own errors once a job exists."""

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic.alias_generators import to_camel

from diffleet_api.doors.a1111.schemas import A1111ErrorBody
from diffleet_api.errors import ApiError, Failure, FieldError, InvalidError, invalid

PREFIX = "/sdapi/"  # the routes whose errors `render` shapes
CHECKPOINT_FIELD = "override_settings.sd_model_checkpoint"
# diffleet's spec fields (as submission's errors name them) as A1111 names them.
A1111_FIELDS = {
    "model": CHECKPOINT_FIELD,
    "negativePrompt": "negative_prompt",
    "guidanceScale": "cfg_scale",
    "sampler": "sampler_name",
    "batchSize": "batch_size",
    "initImage": "init_images",
    "maskImage": "mask",
    "strength": "denoising_strength",
    "style": "styles",
    "vae": "override_settings.sd_vae",
    "hiresFix.scale": "hr_scale",
    "hiresFix.strength": "denoising_strength",
    "hiresFix.steps": "hr_second_pass_steps",
}


class JobFailedError(ApiError):
    status, kind, title = 500, "job-failed", "The job failed"


class JobStillRunningError(ApiError):
    status, kind, title = 504, "job-still-running", "The job is still running"


def render(_: Request, failure: Failure) -> JSONResponse:
    """A1111's error shape (its API answers `{error, detail, body, errors}`), with
    diffleet's statuses; field errors in `errors`."""
    body = A1111ErrorBody(error=failure.kind, detail=failure.detail, errors=failure.errors or [])
    return JSONResponse(body.model_dump(), status_code=failure.status, headers=failure.headers)


def a1111_field(field: str) -> str:
    """A spec field, as submission's errors (camelCase) or the spec's own validation
    (snake_case) name it, by its A1111 name."""
    camel = ".".join(to_camel(part) for part in field.split("."))
    return A1111_FIELDS.get(camel, field)


def renamed(error: InvalidError) -> InvalidError:
    """A 422 of the spec's rules, its fields named as the A1111 request names them."""
    found = [
        FieldError(field=a1111_field(item.field), rule=item.rule, message=item.message)
        for item in error.errors or []
    ]
    return invalid(found) if found else error


def refused(field: str, message: str) -> FieldError:
    return FieldError(field=field, rule="unsupported", message=message)
