"""Storage backends for the tests: SQLite files and schemas on the shared PostgreSQL.

The shared server is the one `.ci/run` starts (127.0.0.1:5432, trust auth). Tests that need it
fail, never skip, when it is not there. `TOKENWAY_TEST_PG` overrides the URL (no query part).
"""

from __future__ import annotations

import getpass
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

_CANDIDATES = (
    f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/postgres",
)


@pytest.fixture(scope="session")
async def pg_base() -> str:
    """A URL of the shared PostgreSQL server that this process can log in to."""
    candidates = [os.environ["TOKENWAY_TEST_PG"]] if "TOKENWAY_TEST_PG" in os.environ else []
    errors = []
    for url in candidates or _CANDIDATES:
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        await conn.close()
        return url
    pytest.fail(
        "the PostgreSQL ledger tests need the shared server on 127.0.0.1:5432 (trust auth); "
        "start it (.ci/run does) or set TOKENWAY_TEST_PG. Tried: " + "; ".join(errors),
        pytrace=False,
    )


@pytest.fixture
async def pg_url(pg_base: str, tmp_path: Path) -> AsyncIterator[str]:
    """A ledger URL on the shared server in a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex}"
    yield f"{pg_base}?schema={schema}&spool={tmp_path / 'spool'}"
    conn = await asyncpg.connect(pg_base, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty ledger of each backend: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
