"""What the HTTP fuzz tests share: a watch on the gateway's logs, the check every answer must
pass, strategies for odd JSON, and a gateway on a PostgreSQL schema of its own.

The house rule they check: bad input gets a clear error in OpenAI's own shape with a 4xx,
never a 5xx, a hang or a traceback, and no secret ever appears in an answer or a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.e2e.stack import Stack

__all__ = [
    "ERROR_FIELDS",
    "Api",
    "LogWatch",
    "check_answer",
    "fuzz",
    "json_values",
    "odd_ids",
    "odd_text",
    "pg_stack",
    "repeated",
    "scalars",
    "watching",
]

ERROR_FIELDS = {"message", "type", "param", "code"}
# A hang shows up as a timeout, well before pytest's own.
TIMEOUT_S = 15.0


class LogWatch(logging.Handler):
    """Every record the gateway and its HTTP server log. An error record is a traceback a client
    may never have seen (say, after a stream started); no record may hold a secret."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.secrets = secrets
        self.records: list[logging.LogRecord] = []
        self._format = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def _text(self, record: logging.LogRecord) -> str:
        text = record.getMessage() + " " + str(getattr(record, "fields", ""))
        if record.exc_info:
            text += "\n" + self._format.formatException(record.exc_info)
        return text

    def settle(self) -> None:
        """Forget what was logged, once the server has logged it: uvicorn logs a traceback just
        after it has sent its 500, which must not be blamed on the next input."""
        time.sleep(0.2)
        self.records.clear()

    def assert_clean(self) -> None:
        """No error since the last call, and no secret in anything logged; then forget it."""
        records, self.records = self.records, []
        errors = [self._text(r) for r in records if r.levelno >= logging.ERROR]
        assert not errors, "the gateway logged errors:\n" + "\n".join(errors)
        for r in records:
            text = self._text(r)
            leaked = [s for s in self.secrets if s in text]
            assert not leaked, f"a log record holds a secret: {text[:300]}"


@contextmanager
def watching(secrets: list[str]) -> Iterator[LogWatch]:
    """A `LogWatch` on the gateway's loggers (info and up) and uvicorn's, for the duration."""
    watch = LogWatch(secrets)
    loggers = [logging.getLogger("tokenway"), logging.getLogger("uvicorn")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(watch)
    # info records too, so that a secret in one is seen
    loggers[0].setLevel(logging.INFO)
    try:
        yield watch
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(watch)
            lg.setLevel(level)


def check_answer(r: httpx.Response, secrets: list[str]) -> Any:
    """Assert the house rule on one answer; the decoded JSON body (None for a stream)."""
    where = (
        f"{r.request.method} {r.request.url.raw_path[:120]!r} -> {r.status_code}: {r.text[:300]}"
    )
    assert r.status_code < 500, where
    leaked = [s for s in secrets if s in r.text]
    assert not leaked, f"a secret in the answer: {where}"
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        assert r.status_code == 200, where
        assert "event: " in r.text, where
        return None
    try:
        doc = r.json()
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON: {where}") from None
    if r.status_code >= 400:
        assert isinstance(doc, dict) and set(doc) == {"error"}, where
        err = doc["error"]
        assert isinstance(err, dict) and set(err) == ERROR_FIELDS, where
        assert isinstance(err["message"], str) and err["message"].strip(), where
        assert isinstance(err["type"], str) and err["type"], where
        assert err["param"] is None or isinstance(err["param"], str), where
    else:
        assert 200 <= r.status_code < 300, where
        assert isinstance(doc, dict), where
    return doc


def fuzz(examples: int) -> settings:
    """Hypothesis settings for `examples` inputs (times `TOKENWAY_FUZZ_SCALE`, for a longer hunt
    than the suite's minute): no deadline (a stream or a store write may take its time on a
    busy machine), no complaint about slow or large inputs."""
    scale = float(os.environ.get("TOKENWAY_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(examples * scale)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Api:
    """A gateway under test, as clients holding `keys` see it: every answer is checked on
    arrival, and so is the log. `sent` counts the requests."""

    def __init__(self, stack: Stack, watch: LogWatch, keys: list[str]) -> None:
        self.stack = stack
        self.watch = watch
        self.key = keys[0]
        self.clients = {
            k: httpx.Client(
                base_url=stack.url, headers={"authorization": f"Bearer {k}"}, timeout=TIMEOUT_S
            )
            for k in keys
        }
        self.sent = 0

    def send(self, method: str, url: str, *, key: str | None = None, **kw: Any) -> tuple[int, Any]:
        """One request (by the first key unless told); its status and decoded JSON body."""
        r = self.clients[key or self.key].request(method, url, **kw)
        self.sent += 1
        if r.status_code >= 500:
            self.watch.settle()
        doc = check_answer(r, self.watch.secrets)
        self.watch.assert_clean()
        return r.status_code, doc

    def post_json(self, url: str, body: Any, *, key: str | None = None) -> tuple[int, Any]:
        """`body` as JSON (raw bytes as they are)."""
        content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
        headers = {"content-type": "application/json"}
        return self.send("POST", url, key=key, content=content, headers=headers)

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


# ---- strategies -----------------------------------------------------------------------------


def repeated(unit: Any, times: int) -> st.SearchStrategy[Any]:
    """`unit * times`, under a short repr (Hypothesis warns of a strategy's huge one)."""
    return st.just(times).map(lambda n: unit * n)


# Text with what breaks naive code: NUL, other controls, quotes, slashes, percent signs,
# non-Latin and astral characters (never lone surrogates: JSON cannot carry them).
odd_text = st.one_of(
    st.text(max_size=12),
    st.text(
        st.sampled_from(
            ["\x00", "\n", "\r", '"', "'", "\\", "/", "%", ".", "é", "𝄞", "²", "\u202e"]
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["", " ", "null", "0", "-1", "../../etc/passwd", "%2e%2e%2f"]),
    repeated("x", 5000),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # unbounded: far past 64 bits too
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)

json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=10,
)

# Ids as they may arrive in a path or a body: odd text, and near misses of real ones.
odd_ids = st.one_of(
    odd_text.filter(bool),
    st.sampled_from(["resp_", "file-", "batch_", "%00", "%ff", "a%2Fb", "é"]),
    repeated("resp_x", 300),
)


# ---- a gateway on PostgreSQL ------------------------------------------------------------------


async def _drop_schema(base: str, schema: str) -> None:
    conn = await asyncpg.connect(base, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextmanager
def pg_stack(doc_for: Callable[[str], dict[str, Any]], base: str, spool: str) -> Iterator[Stack]:
    """A gateway whose stores are a fresh schema on the shared PostgreSQL server (`base`),
    dropped afterwards; `doc_for(url)` is its config document."""
    schema = f"t_{uuid.uuid4().hex}"
    s = Stack(doc_for(f"{base}?schema={schema}&spool={spool}")).start()
    try:
        yield s
    finally:
        s.stop()
        # on a thread of its own: asyncio.run would unset the test loop of this one
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _drop_schema(base, schema)).result(30)


A = TypeVar("A", bound=Api)


def backend_fixtures(
    api_class: type[A],
    doc_for: Callable[[str], dict[str, Any]],
    secrets: list[str],
    keys: list[str],
    label: str,
) -> tuple[Any, Any]:
    """The module fixtures `pg` (a gateway on a fresh PostgreSQL schema) and `api` (an
    `api_class` over the module's `stack`, then over `pg`), watching the logs for errors and
    `secrets`, and printing how many requests each backend got."""

    @pytest.fixture(scope="module")
    def pg(pg_base: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        with pg_stack(doc_for, pg_base, str(tmp_path_factory.mktemp("fuzz") / "spool")) as s:
            yield s

    @pytest.fixture(scope="module", params=["sqlite", "postgres"])
    def api(request: pytest.FixtureRequest) -> Iterator[A]:
        gateway: Stack = request.getfixturevalue("stack" if request.param == "sqlite" else "pg")
        with watching(secrets) as watch:
            a = api_class(gateway, watch, keys)
            yield a
            a.close()
            print(f"\n{label} fuzz on {request.param}: {a.sent} requests")

    return pg, api
