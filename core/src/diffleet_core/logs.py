"""Logs of every component: one JSON object a line on stderr (or plain text for a human at
a terminal), from DIFFLEET_LOG_FORMAT (json | text) and DIFFLEET_LOG_LEVEL.

A JSON line holds time, level, logger, message and component, and when there is one:
the uid of the GenerationJob being handled (`job_uid`, set by `job_context` around a
job's handling, or taken from an `about_job` record), the current OpenTelemetry trace
and span ids, the Kubernetes object the record is about (`object`) and the exception.
"""

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from opentelemetry import trace
from pydantic_settings import BaseSettings, SettingsConfigDict

from diffleet_core import API_GROUP, API_VERSION
from diffleet_core.resources.generation_job import KIND

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_job_uid: ContextVar[str | None] = ContextVar("diffleet_job_uid", default=None)


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIFFLEET_LOG_")

    format: LogFormat = LogFormat.JSON
    level: str = "INFO"


@contextmanager
def job_context(uid: str) -> Iterator[None]:
    """Every record logged inside (in this task or thread) carries the job's uid."""
    token = _job_uid.set(uid)
    try:
        yield
    finally:
        _job_uid.reset(token)


def about_job(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """`extra=` for a log call about one GenerationJob outside its `job_context`; the
    record's `k8s_ref` is the shape kopf's own object loggers use."""
    return {
        "k8s_ref": {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        }
    }


def job_uid_of(record: logging.LogRecord) -> str | None:
    """The job a record is about: the job being handled, else the GenerationJob it names."""
    if uid := _job_uid.get():
        return uid
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping) and ref.get("kind") == KIND and ref.get("uid"):
        return str(ref["uid"])
    return None


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": self.component,
        }
        if uid := job_uid_of(record):
            line["job_uid"] = uid
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = trace.format_trace_id(span.trace_id)
            line["span_id"] = trace.format_span_id(span.span_id)
        if isinstance(ref := getattr(record, "k8s_ref", None), Mapping):
            line["object"] = dict(ref)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """The human form: the job's uid, when there is one, ends the line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        uid = job_uid_of(record)
        return f"{text} [job {uid}]" if uid else text


def configure_logging(component: str) -> None:
    """Sends every logger's records (libraries' too: kopf, uvicorn, aio-pika) through one
    stderr handler in the configured format; call once, first thing in a process."""
    settings = LogSettings()
    handler = logging.StreamHandler(sys.stderr)
    if settings.format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for previous in list(root.handlers):
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(settings.level.upper())
