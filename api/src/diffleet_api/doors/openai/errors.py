"""The door's error dialect: every failure under its prefix as OpenAI's
`{"error": {message, type, param, code}}`, with the status the OpenAI SDK raises its
matching exception for, and `x-should-retry: false` where a retry would make a second job
or cannot help; and the door's own failures (a refused parameter, a job still running or
not succeeded)."""

from fastapi import Request
from fastapi.responses import JSONResponse

from diffleet_api.doors.openai.schemas import OpenAIErrorBody, OpenAIErrorObject
from diffleet_api.errors import ApiError, Failure, FieldError, invalid
from diffleet_api.schemas import JobPublic

PREFIX = "/v1/images"
"""The door's routes; errors.install renders every failure under it with `render`."""
JOB_HEADER = "Diffleet-Job"
"""Names the job of an answer (and of an error once it exists): follow it at /v1/jobs/{id}."""
UNSUPPORTED = "unsupported"
"""The rule of a parameter asking for what the platform cannot do."""

# Spec fields (as POST /v1/jobs names them) by the OpenAI parameter they came from.
PARAMS = {
    "batchSize": "n",
    "width": "size",
    "height": "size",
    "steps": "quality",
    "output.format": "output_format",
    "output.quality": "output_compression",
    "initImage": "image",
    "maskImage": "mask",
    "image[]": "image",
}
CODES = {
    "additionalProperties": "unknown_parameter",
    UNSUPPORTED: "unsupported_parameter",
    "required": "missing_required_parameter",
}
MODEL_NOT_FOUND = "model_not_found"
# Status, type and code of each failure that is not a refused parameter.
KINDS: dict[int, tuple[int, str, str | None]] = {
    401: (401, "invalid_request_error", "invalid_api_key"),
    402: (429, "insufficient_quota", "insufficient_quota"),
    403: (403, "invalid_request_error", "permission_denied"),
    404: (404, "invalid_request_error", "not_found"),
    413: (400, "invalid_request_error", "too_large"),
    415: (400, "invalid_request_error", "unsupported_media_type"),
    429: (429, "requests", "rate_limit_exceeded"),
    500: (500, "server_error", None),
    503: (503, "server_error", "unavailable"),
    504: (504, "server_error", "job_still_running"),
}
# A retry cannot help (nor can one of a failure that names its job: it would make a
# second job).
NO_RETRY = {"insufficient-credits", "internal"}


class JobStillRunningError(ApiError):
    status, kind, title = 504, "job-still-running", "The job is still running"


class JobFailedError(ApiError):
    status, kind, title = 500, "job-failed", "The job did not succeed"


def refused(param: str, message: str, rule: str = UNSUPPORTED) -> ApiError:
    return invalid([FieldError(field=param, rule=rule, message=message)])


def job_header(job: JobPublic) -> dict[str, str]:
    return {JOB_HEADER: job.id}


def still_running(job: JobPublic, wait_seconds: float) -> JobStillRunningError:
    return JobStillRunningError(
        f"job {job.id} has not finished within {wait_seconds:g} s; follow it at"
        f" /v1/jobs/{job.id} (its outputs at /v1/jobs/{job.id}/outputs)",
        headers=job_header(job),
    )


def not_succeeded(job: JobPublic) -> JobFailedError:
    phase = job.status.phase.value if job.status.phase else "Pending"
    why = ": ".join(part for part in (job.status.reason, job.status.message) if part)
    return JobFailedError(
        f"job {job.id} {phase}" + (f" ({why})" if why else ""), headers=job_header(job)
    )


def param_of(field: str) -> str:
    """The OpenAI parameter of a refused field (a spec's field mapped back)."""
    return PARAMS.get(field, field)


def code_of(param: str, rule: str) -> str:
    """OpenAI's code of a refused parameter (a model that does not exist has its own)."""
    if (param, rule) == ("model", "exists"):
        return MODEL_NOT_FOUND
    return CODES.get(rule, "invalid_value")


def error_object(failure: Failure) -> tuple[int, OpenAIErrorObject]:
    """The failure's status and error object as OpenAI answers them."""
    if failure.status in (400, 422) and failure.errors:
        first = failure.errors[0]
        param = param_of(first.field)
        messages = [
            f"Unknown parameter: {param_of(error.field)!r}."
            if error.rule == "additionalProperties"
            else f"Invalid {param_of(error.field)!r}: {error.message}"
            for error in failure.errors
        ]
        return 400, OpenAIErrorObject(
            message=" ".join(messages),
            type="invalid_request_error",
            param=param,
            code=code_of(param, first.rule),
        )
    status, kind, known_code = KINDS.get(
        failure.status,
        (
            failure.status,
            "server_error" if failure.status >= 500 else "invalid_request_error",
            None,
        ),
    )
    code = "job_failed" if failure.kind == "job-failed" else known_code
    job_id = (failure.headers or {}).get(JOB_HEADER)
    return status, OpenAIErrorObject(message=failure.detail, type=kind, code=code, job_id=job_id)


def render(request: Request, failure: Failure) -> JSONResponse:
    """The errors.install dialect of the door's prefix: `{"error": {message, type, param,
    code}}` with the status the OpenAI SDK raises its matching exception for."""
    status, error = error_object(failure)
    headers = dict(failure.headers or {})
    if failure.kind in NO_RETRY or JOB_HEADER in headers:
        headers["x-should-retry"] = "false"
    body = OpenAIErrorBody(error=error).model_dump(exclude_none=True)
    body["error"].setdefault("param", None)
    body["error"].setdefault("code", None)
    return JSONResponse(body, status_code=status, headers=headers)
