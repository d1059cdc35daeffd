"""Structured JSON logs, one object per line. Secrets never reach a log: callers pass key
names, never key values, and upstream error text is logged only after redaction."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import msgspec

_SECRETISH = re.compile(
    r"(sk-[A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+\S+|(?<![a-z_])key=[^&\s]+)"
)


def redact(text: str) -> str:
    """Mask anything that looks like a credential."""
    return _SECRETISH.sub("[redacted]", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return msgspec.json.encode(doc).decode()


def setup_logging(level: str = "info") -> None:
    """Send JSON lines to stderr at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("tokenway")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


log = logging.getLogger("tokenway")
