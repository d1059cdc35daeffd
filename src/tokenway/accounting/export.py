"""Usage export: one row per request, as JSON Lines or CSV.

Columns, in order: the stable ones of DESIGN.md (`EXPORT_FIELDS`), then extras. `ts` is RFC 3339
UTC with milliseconds (`2026-11-28T03:22:29.123Z`); money is a decimal string with at least nine
decimals and never rounded (`0.000001250`). In CSV a missing value is an empty cell and
booleans are `true`/`false`; in JSONL missing values are null and tokens are numbers.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any, Literal, TextIO

from tokenway.accounting.ledger import read_requests

__all__ = ["EXPORT_FIELDS", "export", "export_rows", "format_money", "format_ts", "parse_since"]

EXPORT_FIELDS: tuple[str, ...] = (
    "request_id",
    "ts",
    "key",
    "model",
    "provider",
    "provider_model",
    "mode",
    "stream",
    "status",
    "attempts",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "revenue_usd",
    "ttft_ms",
    "latency_ms",
    # extras
    "api",
    "flag",
    "team",
    "usage_source",
    "cache_write_1h_tokens",
    "service_tier",
    "end_user",
    "tags",
    "task",
)

_NINE = Decimal("1e-9")
_WIDE = Context(prec=80)  # quantize must never fail on a large amount
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def format_money(value: Decimal) -> str:
    """A decimal string with at least nine decimals, keeping any further digits exactly."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -9:
        value = value.quantize(_NINE, context=_WIDE)
    return format(value, "f")


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC with millisecond precision."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """Parse `--since`: an RFC 3339 timestamp, a date (midnight UTC), or a relative age such as
    `30m`, `24h`, `7d`, `2w` (before `now`, default the current time). Naive times are UTC."""
    if match := _RELATIVE.match(text):
        amount = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        return (now or datetime.now(UTC)) - timedelta(seconds=amount)
    stripped = text.strip()
    try:
        if len(stripped) == 10:
            day = date.fromisoformat(stripped)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(
            f"cannot parse since={text!r}: use an RFC 3339 time, a date, or an age like 24h, 7d"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _cell(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "ts":
        return format_ts(value)
    if isinstance(value, Decimal):
        return format_money(value)
    return value


def export_rows(rows: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """Ledger rows (as `read_requests` yields them) shaped for export, in column order."""
    for row in rows:
        yield {name: _cell(name, row.get(name)) for name in EXPORT_FIELDS}


def export(url: str, fmt: Literal["jsonl", "csv"], since: datetime | None, out: TextIO) -> int:
    """Write every request row of the ledger at `url` with `ts >= since` to `out`.

    Returns the number of rows written.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r}: use jsonl or csv")
    count = 0
    rows = export_rows(read_requests(url, since))
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")))
            out.write("\n")
            count += 1
        return count
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row.values()])
        count += 1
    return count


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value
