"""Logging: one JSON object a line, or human-readable lines (structlog) when stderr is a terminal.

Every record — grantd's request lines, uvicorn's own messages, errors with their tracebacks —
goes through the standard library's logging to one stderr handler whose :class:`Formatter`
renders it: as one compact JSON object, or with structlog's ``ConsoleRenderer`` on a terminal.
structlog is imported only then: with what it pulls in (rich, pygments) it added ~5 MB to
each server process, for a renderer a JSON log never uses. A request
line carries ``method``, ``path`` (never the query string), ``route`` (the template),
``status``, ``duration_ms``, ``request_id`` and ``client``; every record carries ``level``,
``logger``, ``pid`` and ``timestamp``, and those logged while a request is handled its
``request_id`` too.

What is never logged: query strings, request and response bodies, headers (``Authorization``,
cookies), passwords, secrets, codes and tokens. Values under keys that name such things are
replaced by ``********`` as a second line of defence, and tracebacks are rendered without
local variables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

ACCESS_LOGGER = "grantd.access"
FORMATS = ("auto", "json", "console")
MASK = "********"

request_id: ContextVar[str | None] = ContextVar("grantd_request_id", default=None)

_SENSITIVE = re.compile(
    r"(password|secret|token|authorization|cookie|code|app_key|api_key|credential|assertion|verifier)", re.I
)
# Keys grantd itself logs whose names match the pattern above but hold no secret.
_HARMLESS = frozenset({"status_code", "error_code"})


_sensitive_keys: dict[str, bool] = {}


def _is_sensitive(key: str) -> bool:
    known = _sensitive_keys.get(key)
    if known is None:
        known = key not in _HARMLESS and _SENSITIVE.search(key) is not None
        if len(_sensitive_keys) < 1024:
            _sensitive_keys[key] = known
    return known


def _redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Masks the values of fields whose names say they hold a secret: a second line of defence."""
    for key, value in event_dict.items():
        if value not in (None, "") and _is_sensitive(key):
            event_dict[key] = MASK
    return event_dict


def use_console(fmt: str, stream: Any = None) -> bool:
    if fmt == "auto":
        stream = stream or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())
    return fmt == "console"


# One encoder, compact, reused: json.dumps() with arguments would build a new one per line.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=repr)


def _render_json(_logger: Any, _method: str, event: dict[str, Any]) -> str:
    """A renderer with structlog's signature: the event as one compact JSON object."""
    return _ENCODER.encode(event)


# The attributes every LogRecord has; the others were passed as ``extra`` and become fields.
_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class Formatter(logging.Formatter):
    """Renders a standard-library record as JSON, or with structlog's console renderer.

    The event dictionary is built straight from the record — its message, level, logger name,
    ``extra`` fields, the request id of the request being handled, the process id and a UTC
    timestamp — then redacted and rendered (as JSON, or by ``ConsoleRenderer`` on a
    terminal). Unlike structlog's ``ProcessorFormatter`` it copies no record, which keeps the
    request line, written once a request, at a few microseconds.
    """

    def __init__(self, fmt: str = "auto") -> None:
        super().__init__()
        if fmt not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
        self.console = use_console(fmt)
        if self.console:
            import structlog.dev

            self.render: Any = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        else:
            self.render = _render_json

    def format(self, record: logging.LogRecord) -> str:
        if (
            record.name == ACCESS_LOGGER
            and not self.console
            and not record.exc_info
            and record.__dict__.keys() - _RECORD_KEYS <= _ACCESS_FIELD_SET
        ):
            return self._access_line(record)
        event: dict[str, Any] = {
            "event": record.getMessage(),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS and key != "color_message":  # uvicorn's coloured copy of the message
                event[key] = value
        if "request_id" not in event:
            rid = request_id.get()
            if rid is not None:
                event["request_id"] = rid
        event["pid"] = _PID.pid  # which worker of `grantd serve --workers N` wrote the line
        if record.exc_info:
            # A plain traceback: file, line and source of each frame, never its local variables.
            event["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            event["stack"] = record.stack_info
        _redact(None, "", event)
        event["timestamp"] = _timestamp(record.created)
        return self.render(None, "", event)


    @staticmethod
    def _access_line(record: logging.LogRecord) -> str:
        """The request line, written once a request: when it holds only the fields
        ``grantd.telemetry`` gives it, none of which names a secret, it skips the generic walk
        over the record and the redaction (any other field takes the generic way, masked)."""
        fields = record.__dict__
        event: dict[str, Any] = {"event": record.msg, "level": record.levelname.lower(), "logger": ACCESS_LOGGER}
        for key in _ACCESS_FIELDS:
            event[key] = fields.get(key)
        event["pid"] = _PID.pid
        event["timestamp"] = _timestamp(record.created)
        return _ENCODER.encode(event)


# The fields of a request line, as grantd.telemetry passes them.
_ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "request_id", "client")
_ACCESS_FIELD_SET = frozenset(_ACCESS_FIELDS)


class _Pid:
    """This process's id, read again after a fork (uvicorn's workers are forked)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._refresh)

    def _refresh(self) -> None:
        self.pid = os.getpid()


_PID = _Pid()
_second: list[Any] = [None, ""]


def _timestamp(created: float) -> str:
    """RFC 3339 UTC with microseconds; the part up to the second is formatted once a second."""
    whole = int(created)
    if _second[0] != whole:
        _second[0], _second[1] = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{_second[1]}.{int(created % 1 * 1e6):06d}Z"


def formatter(fmt: str = "auto") -> logging.Formatter:
    """The formatter of grantd's log handler: JSON lines, or console lines on a terminal (``fmt="auto"``)."""
    return Formatter(fmt)


def config(level: str = "info", fmt: str = "auto") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary (also uvicorn's ``log_config``): everything to stderr."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"grantd": {"()": "grantd.logs.formatter", "fmt": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "grantd", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": upper},
        "loggers": {
            "uvicorn": {"handlers": [], "level": upper, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": upper, "propagate": True},
            # grantd logs every request itself (grantd.access), without query strings.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "grantd": {"level": upper},
            # /readyz asks Alembic for the schema's revision; its "Context impl" notes are not news.
            "alembic": {"level": "WARNING"},
        },
    }


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure logging in this process (the CLI passes :func:`config` to uvicorn instead)."""
    import logging.config

    logging.config.dictConfig(config(level, fmt))
