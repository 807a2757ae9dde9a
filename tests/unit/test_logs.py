"""The components' log lines (diffleet_core.logs): JSON with the job and trace they are
about, or text, as DIFFLEET_LOG_FORMAT says."""

import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from diffleet_core.logs import (
    JsonFormatter,
    TextFormatter,
    about_job,
    configure_logging,
    job_context,
)


def record(message: str = "hello %s", *args: object, **extra: Any) -> logging.LogRecord:
    made = logging.getLogger("diffleet_test").makeRecord(
        "diffleet_test", logging.WARNING, __file__, 1, message, args or ("world",), None
    )
    made.__dict__.update(extra)
    return made


def json_line(formatted: logging.LogRecord) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(JsonFormatter("operator").format(formatted))
    return line


def test_a_plain_line_has_the_five_fields_and_nothing_else() -> None:
    line = json_line(record())
    assert set(line) == {"time", "level", "logger", "message", "component"}
    assert line["level"] == "WARNING"
    assert line["logger"] == "diffleet_test"
    assert line["message"] == "hello world"
    assert line["component"] == "operator"
    assert line["time"].endswith("+00:00")


def test_a_line_logged_while_handling_a_job_carries_its_uid() -> None:
    with job_context("uid-1"):
        inside = json_line(record())
    assert inside["job_uid"] == "uid-1"
    assert "job_uid" not in json_line(record())


def test_a_line_about_a_job_carries_its_uid_and_the_object() -> None:
    line = json_line(record(**about_job("team-a", "lighthouse", "uid-2")))
    assert line["job_uid"] == "uid-2"
    assert line["object"]["kind"] == "GenerationJob"
    assert line["object"]["name"] == "lighthouse"
    assert line["object"]["namespace"] == "team-a"


def test_a_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("dispatch") as span:
        line = json_line(record())
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in json_line(record())


def test_an_exception_is_one_field_of_the_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record(exc_info=sys.exc_info())
    formatted = JsonFormatter("api").format(failed)
    assert "\n" not in formatted
    assert "RuntimeError: boom" in json.loads(formatted)["exception"]


def test_the_text_form_ends_with_the_job() -> None:
    with job_context("uid-3"):
        text = TextFormatter().format(record())
    assert text.endswith("WARNING diffleet_test hello world [job uid-3]")


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_logging_reads_format_and_level(
    root_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("worker")
    (handler,) = root_logger.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    assert handler.formatter.component == "worker"
    assert root_logger.level == logging.INFO

    monkeypatch.setenv("DIFFLEET_LOG_FORMAT", "text")
    monkeypatch.setenv("DIFFLEET_LOG_LEVEL", "debug")
    configure_logging("worker")
    (handler,) = root_logger.handlers
    assert isinstance(handler.formatter, TextFormatter)
    assert root_logger.level == logging.DEBUG
