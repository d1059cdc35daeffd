"""Lists of files, batches and async tasks in OpenAI's list shape, and the cursor pagination
they share: `?limit=` and `?after=<id of the last object seen>`, in (created_at, id) order.

Ids are time-ordered (batch/ids.py), so objects made within the same second still list in the
order they were made, and a cursor stays valid however many objects arrive meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from tokenway.errors import BadRequest, NotFound
from tokenway.store import Database

__all__ = ["Page", "limit_of", "list_object", "page"]


class Page(NamedTuple):
    """One page of a list, and whether more follow."""

    rows: list[dict[str, Any]]
    has_more: bool


def page(
    db: Database,
    source: str,
    columns: str,
    where: str,
    params: dict[str, Any],
    limit: int,
    after: str | None,
    ascending: bool,
    *,
    alias: str = "",
    narrow: str = "",
) -> Page | None:
    """A page of `source` (a table, or a join whose sort columns are `{alias}created_at` and
    `{alias}id`) after the row `after`; None when `after` names no row that `where` admits.

    `narrow` filters the rows listed but not the cursor: a filter on something that changes
    (a task's status) must not turn the last id a client saw into an unknown one."""
    created, key = f"{alias}created_at", f"{alias}id"
    p = dict(params)
    listed = f"{where} AND {narrow}" if narrow else where
    if after is not None:
        cursor = db.fetch(
            f"SELECT {created} AS created_at FROM {source} WHERE {key} = :after AND {where}",
            {**params, "after": after},
        )
        if not cursor:
            return None
        op = ">" if ascending else "<"
        listed += (
            f" AND ({created} {op} :after_at OR ({created} = :after_at AND {key} {op} :after))"
        )
        p.update(after=after, after_at=cursor[0]["created_at"])
    direction = "ASC" if ascending else "DESC"
    rows = db.fetch(
        f"SELECT {columns} FROM {source} WHERE {listed} "
        f"ORDER BY {created} {direction}, {key} {direction} LIMIT :n",
        {**p, "n": limit + 1},
    )
    return Page(rows[:limit], len(rows) > limit)


def limit_of(value: str | None, default: int, most: int) -> int:
    """The `limit` query parameter: `default` when absent, else an integer from 1 to `most`."""
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        raise BadRequest(f"limit: must be an integer from 1 to {most}.", param="limit")
    return n


def list_object(
    found: Page | None, after: str | None, render: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """OpenAI's list object of a page, each row rendered by `render`; 404 when the `after`
    cursor named nothing the caller may see."""
    if found is None:
        raise NotFound(f"No object with id '{after}' to list after.", param="after")
    data = [render(r) for r in found.rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": found.has_more,
    }
