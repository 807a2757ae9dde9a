"""One error shape for every failure: RFC 9457 problem details (application/problem+json).

Validation errors list each broken field with the rule it breaks, named as the CRD's
OpenAPI schema names it (minimum, maximum, multipleOf, pattern, enum, required, type, ...)
or, for the cross-field rules, `x-kubernetes-validations` with the CEL rule's message. A
body that is not JSON at all is 400, not a validation error.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://diffleet.io/problems/"

logger = logging.getLogger(__name__)

# pydantic's error types, as the rules of an OpenAPI (CRD) schema.
RULES = {
    "greater_than_equal": "minimum",
    "greater_than": "exclusiveMinimum",
    "less_than_equal": "maximum",
    "less_than": "exclusiveMaximum",
    "multiple_of": "multipleOf",
    "string_too_short": "minLength",
    "string_too_long": "maxLength",
    "string_pattern_mismatch": "pattern",
    "too_short": "minItems",
    "too_long": "maxItems",
    "enum": "enum",
    "literal_error": "enum",
    "missing": "required",
    "extra_forbidden": "additionalProperties",
    "value_error": "x-kubernetes-validations",
    "int_type": "type",
    "int_parsing": "type",
    "float_parsing": "type",
    "bool_parsing": "type",
    "float_type": "type",
    "bool_type": "type",
    "string_type": "type",
    "list_type": "type",
    "model_type": "type",
    "model_attributes_type": "type",
    "dict_type": "type",
    "control_character": "pattern",
    "url_parsing": "format",
    "datetime_parsing": "format",
    "datetime_type": "type",
}


class FieldError(BaseModel):
    field: str = Field(description="Path of the field, camelCase, dot-separated")
    rule: str = Field(description="The schema rule it breaks (minimum, pattern, required, ...)")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="Each invalid field, for validation problems"
    )


class ApiError(Exception):
    """An error the client can act on; becomes a problem response."""

    status = 400
    kind = "bad-request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class UnauthenticatedError(ApiError):
    status, kind, title = 401, "unauthenticated", "Missing or invalid credentials"


class ForbiddenError(ApiError):
    status, kind, title = 403, "forbidden", "Not allowed"


class NotFoundError(ApiError):
    status, kind, title = 404, "not-found", "Not found"


class ConflictError(ApiError):
    status, kind, title = 409, "conflict", "Conflict"


class PaymentRequiredError(ApiError):
    status, kind, title = 402, "insufficient-credits", "Insufficient credits"


class TooLargeError(ApiError):
    status, kind, title = 413, "too-large", "Content too large"


class UnsupportedMediaError(ApiError):
    status, kind, title = 415, "unsupported-media-type", "Unsupported media type"


class InvalidError(ApiError):
    status, kind, title = 422, "validation", "Invalid request"


class RateLimitedError(ApiError):
    status, kind, title = 429, "rate-limited", "Too many requests"


class UnavailableError(ApiError):
    status, kind, title = 503, "unavailable", "A backing service is unavailable"


def field_path(location: Sequence[int | str]) -> str:
    """`("body", "loras", 0, "weight")` as "loras[0].weight"."""
    path = ""
    for part in location:
        if part in ("body", "query", "path", "header") and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def field_errors(errors: Sequence[ErrorDetails] | Sequence[Any]) -> list[FieldError]:
    """pydantic's errors as (field, rule, message); a cross-field rule names its field first."""
    found = []
    for error in errors:
        message = str(error["msg"]).removeprefix("Value error, ")
        path = field_path(error["loc"])
        if error["type"] == "value_error" and " " in message:
            named = message.split(" ", 1)[0]
            path = f"{path}.{named}" if path else named
        if error["type"] == "extra_forbidden" and "_" in str(error["loc"][-1]):
            message = f"unknown field; names are camelCase ({to_camel(str(error['loc'][-1]))})"
        found.append(FieldError(field=path, rule=rule_of(error), message=message))
    return found


def rule_of(error: ErrorDetails | Any) -> str:
    """The schema keyword of a pydantic error. A length bound on an optional parameter
    (`str | None`) is reported as a list's; a string's is minLength or maxLength."""
    if isinstance(error.get("input"), str) and error["type"] in ("too_short", "too_long"):
        return "minLength" if error["type"] == "too_short" else "maxLength"
    return RULES.get(error["type"], error["type"])


def invalid(errors: list[FieldError]) -> InvalidError:
    listed = "; ".join(f"{error.field}: {error.message}" for error in errors[:5])
    return InvalidError(f"{len(errors)} invalid field(s): {listed}", errors=errors)


def invalid_from(error: ValidationError, prefix: Sequence[int | str] = ()) -> InvalidError:
    details = [{**detail, "loc": (*prefix, *detail["loc"])} for detail in error.errors()]
    return invalid(field_errors(details))


@dataclass(frozen=True)
class Failure:
    """A failure to answer, before it is put in a dialect's shape."""

    status: int
    kind: str
    title: str
    detail: str
    errors: list[FieldError] | None = None
    headers: dict[str, str] | None = None


Dialect = Callable[[Request, Failure], JSONResponse]
"""Renders a failure in the error shape of the API a client speaks (the compatible doors:
OpenAI's, Automatic1111's), by path prefix (`install`)."""


def problem(request: Request, failure: Failure) -> JSONResponse:
    """RFC 9457 problem details: the shape of every route but the compatible doors'."""
    body = Problem(
        type=TYPE_BASE + failure.kind,
        title=failure.title,
        status=failure.status,
        detail=failure.detail,
        instance=request.url.path,
        errors=failure.errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=failure.status,
        media_type=PROBLEM_JSON,
        headers=failure.headers,
    )


def respond(request: Request, failure: Failure) -> JSONResponse:
    """The failure in the shape of the route's dialect (problem details by default)."""
    dialects: Mapping[str, Dialect] = getattr(request.app.state, "error_dialects", {})
    for prefix, render in dialects.items():
        if request.url.path.startswith(prefix):
            return render(request, failure)
    return problem(request, failure)


async def on_api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    failure = Failure(
        error.status, error.kind, error.title, error.detail, error.errors, error.headers or None
    )
    return respond(request, failure)


async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    for detail in error.errors():
        if detail["type"] == "json_invalid":
            reason = (detail.get("ctx") or {}).get("error", "")
            return await on_api_error(request, ApiError(f"the body is not JSON: {reason}"))
    problem = invalid(field_errors(error.errors()))
    return await on_api_error(request, problem)


async def on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    kind = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
    detail = str(error.detail)
    failure = Failure(
        error.status_code, kind, detail, detail, headers=getattr(error, "headers", None)
    )
    return respond(request, failure)


async def on_database_error(request: Request, error: Exception) -> JSONResponse:
    """PostgreSQL unreachable, restarting, or no pooled connection within the request
    timeout (PoolTimeout); also a serialization failure or deadlock: all worth a retry."""
    logger.warning("PostgreSQL failed on %s %s: %r", request.method, request.url.path, error)
    return await on_api_error(
        request, UnavailableError("PostgreSQL is unavailable; retry", headers={"Retry-After": "2"})
    )


async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    failure = Failure(500, "internal", "Internal error", "the server failed; it has been logged")
    return respond(request, failure)


def install(app: FastAPI, dialects: Mapping[str, Dialect] | None = None) -> None:
    """The handlers; `dialects`: the error shape of the routes under each path prefix."""
    app.state.error_dialects = dict(dialects or {})
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for database_error in (psycopg.OperationalError, psycopg.InterfaceError):
        app.add_exception_handler(database_error, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)


# Documented on every route that can return them, so the OpenAPI names the error shape.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": title}
    for status, title in (
        (400, "Malformed request (a body that cannot be parsed)"),
        (401, "Missing or invalid credentials"),
        (403, "Not allowed"),
        (404, "Not found"),
        (422, "Invalid request"),
        (429, "Too many requests"),
        (503, "A backing service is unavailable, or a submission was abandoned: retry"),
    )
}
