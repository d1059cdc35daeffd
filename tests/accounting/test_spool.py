"""The ledger spool: durable append, replay order, torn tails, and who may replay what."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenway.accounting.spool import Spool

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)
records = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


def replay_all(spool: Spool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for segment in spool.claim():
        with segment:
            out.extend(segment.read())
            segment.done()
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(records, max_size=5), max_size=6), st.integers(1, 400))
def test_batches_come_back_once_in_order(batches: list[list[dict[str, Any]]], cap: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "spool", max_bytes=cap)  # small caps rotate often
        for batch in batches:
            spool.append(batch)
        assert replay_all(spool) == [r for batch in batches for r in batch]
        assert spool.segments() == []
        assert replay_all(Spool(Path(tmp) / "spool")) == []


def test_segments_rotate_past_max_bytes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    for i in range(10):
        spool.append([{"i": i, "pad": "x" * 40}])  # 57 bytes a line: two lines a segment
    assert len(spool.segments()) == 5
    assert [r["i"] for r in replay_all(spool)] == list(range(10))


def test_a_torn_tail_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"i": 1}, {"i": 2}])
    spool.close()
    (path,) = spool.segments()
    with path.open("ab") as f:  # a crash in the middle of the next append
        f.write(b'{"i": 3, "pa')
    (segment,) = Spool(tmp_path).claim()
    with segment:
        assert segment.read() == [{"i": 1}, {"i": 2}]
        assert segment.skipped == 1


def test_a_garbled_line_is_skipped_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"i": 1}])
    spool.close()
    (path,) = spool.segments()
    with path.open("ab") as f:
        f.write(b"\x00\x01 not json\n[1, 2]\n")
    spool = Spool(tmp_path)
    spool.append([{"i": 2}])  # a later segment
    (first, second) = spool.claim()
    with first, second:
        assert first.read() == [{"i": 1}] and first.skipped == 2
        assert second.read() == [{"i": 2}] and second.skipped == 0


def test_an_open_segment_belongs_to_its_writer(tmp_path: Path) -> None:
    writer, other = Spool(tmp_path), Spool(tmp_path)
    writer.append([{"i": 1}])
    assert list(other.claim()) == []  # still being written
    writer.append([{"i": 2}])
    writer.seal()
    assert replay_all(other) == [{"i": 1}, {"i": 2}]


def test_a_claimed_segment_is_replayed_by_one_claimant(tmp_path: Path) -> None:
    writer = Spool(tmp_path)
    writer.append([{"i": 1}])
    writer.close()
    a, b = Spool(tmp_path), Spool(tmp_path)
    (held,) = a.claim()
    assert list(b.claim()) == []
    held.release()  # a failed replay keeps the file
    assert len(a.segments()) == 1
    assert replay_all(b) == [{"i": 1}]
    assert replay_all(a) == []


def test_a_crashed_writers_segment_is_claimed(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tokenway.accounting.spool import Spool\n"
        "s = Spool(Path(sys.argv[1]))\n"
        "s.append([{'i': 1}, {'i': 2}])\n"
        "print('spooled', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "spooled\n"
        assert list(Spool(tmp_path).claim()) == []  # its writer is alive
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert replay_all(Spool(tmp_path)) == [{"i": 1}, {"i": 2}]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "d")
    spool.append([{"secret": "usage"}])
    (path,) = spool.segments()
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.startswith(".")]


def test_an_empty_append_makes_no_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "d")
    spool.append([])
    assert spool.segments() == [] and not (tmp_path / "d").exists()
