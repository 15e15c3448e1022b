"""Structured JSON logs with a redaction processor.

Any field whose name suggests a secret (secret, private, password, signature, token, seed,
authorization, master) is replaced before rendering, wherever it appears in the event.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

_SENSITIVE = re.compile(r"secret|private|password|passphrase|signature|token|seed|authorization|master", re.I)
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _SENSITIVE.search(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _SENSITIVE.search(key):
            event[key] = REDACTED
        else:
            event[key] = _scrub(event[key])
    return event


_open_files: list[TextIO] = []


def configure(level: str = "info", file: Path | None = None) -> None:
    """Log JSON lines to ``file`` (created 0600) or to stderr."""
    stream: TextIO = sys.stderr
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        file.touch(mode=0o600, exist_ok=True)
        stream = file.open("a", encoding="utf-8", buffering=1)
        _open_files.append(stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
