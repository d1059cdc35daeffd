from __future__ import annotations

import json
import logging

import pytest

from tokenway.telemetry.log import JsonFormatter, redact


def test_log_lines_are_json_with_fields_and_no_secrets() -> None:
    rec = logging.LogRecord(
        "tokenway",
        logging.WARNING,
        __file__,
        1,
        "upstream said: bad key sk-live-abcdefgh1234",
        (),
        None,
    )
    rec.fields = {"request_id": "req_1", "provider": "openai"}
    line = JsonFormatter().format(rec)
    doc = json.loads(line)
    assert doc["request_id"] == "req_1" and doc["level"] == "warning"
    assert "sk-live-abcdefgh1234" not in line
    assert doc["ts"].endswith("Z")


@pytest.mark.parametrize(
    "text,secret",
    [
        ("auth: Bearer tok-abc123456789", "tok-abc123456789"),
        ("https://x/v1?key=AIzaSyExample123", "AIzaSyExample123"),
        ("used sk-proj-0123456789abcdef today", "sk-proj-0123456789abcdef"),
    ],
)
def test_redact(text: str, secret: str) -> None:
    out = redact(text)
    assert "[redacted]" in out and secret not in out
