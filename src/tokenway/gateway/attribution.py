"""Who a request is for: the end user the client names and the tags it attaches, stored on the
ledger row so that a platform team can bill its own customers and features."""

from __future__ import annotations

from typing import Any

from tokenway.errors import BadRequest

MAX_TAGS = 32
MAX_LEN = 128
HEADER = "x-tokenway-tags"


def parse_tags(header: str | None, metadata: Any) -> dict[str, str] | None:
    """Tags from the request's string-valued `metadata` and the `x-tokenway-tags` header
    (`feature=search,tenant=acme`); the header wins on a shared name."""
    tags: dict[str, str] = {}
    if isinstance(metadata, dict):
        for k, v in metadata.items():
            if isinstance(k, str) and isinstance(v, str) and k != "user_id":
                tags[k[:MAX_LEN]] = v[:MAX_LEN]
    if header:
        for item in header.split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name:
                raise BadRequest(
                    f"{HEADER}: expected name=value pairs separated by commas, got {item!r}",
                    param=HEADER,
                )
            if len(name) > MAX_LEN or len(value) > MAX_LEN:
                raise BadRequest(f"{HEADER}: names and values are at most {MAX_LEN} characters")
            tags[name] = value
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"{HEADER}: at most {MAX_TAGS} tags per request", param=HEADER)
    return tags or None


def end_user(value: Any) -> str | None:
    """The end user named by the client, bounded in length."""
    return value[:MAX_LEN] if isinstance(value, str) and value else None


TASK_HEADER = "x-tokenway-task"


def task_of(header: str | None, tags: dict[str, str] | None) -> str | None:
    """The request's task class: the `x-tokenway-task` header, else its `task` tag."""
    if header is not None:
        value = header.strip()
        if not value or len(value) > MAX_LEN:
            raise BadRequest(
                f"{TASK_HEADER}: expected a name of 1 to {MAX_LEN} characters", param=TASK_HEADER
            )
        return value
    return tags.get("task") if tags else None
