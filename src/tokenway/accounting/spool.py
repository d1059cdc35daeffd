"""A local spool: append-only files that keep ledger rows while the database is unreachable.

A spool is one directory of segment files named `<time_ns>-<pid>-<n>.jsonl`, one JSON record a
line, replayed in name order (oldest first).

- `Spool.append` writes a batch to this process's open segment in one write followed by one
  fsync, so once it returns the batch survives a crash; only then may the writer acknowledge
  it. A segment is rotated once it passes `max_bytes`, and after a failed write (so a partial
  line is only ever the last line of a file).
- The open segment is held under an exclusive `flock`, and a segment is replayed only by
  whoever takes that lock (`Spool.claim`). Two processes sharing a directory therefore never
  replay the same file at once, and a segment left by a crashed process (whose lock died with
  it) is picked up by the next claim.
- A claimed segment is deleted (`Segment.done`) only after every record in it is stored. A
  crash in between leaves it to be replayed again whole, so replay must be idempotent.
- A torn last line (a crash inside `append`, before its fsync returned and so before the batch
  was acknowledged) is skipped; so is a line that is not JSON. Both are counted in
  `Segment.skipped` and logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Segment", "Spool"]

log = logging.getLogger("tokenway.accounting.spool")

SUFFIX = ".jsonl"


class Segment:
    """One claimed spool file, locked until `done` (delete) or `release` (keep for later)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self.skipped = 0
        """Lines `read` could not use (a torn tail or garbage)."""

    @classmethod
    def take(cls, path: Path) -> Segment | None:
        """Lock `path` for replay, or None if another holder has it or it is already gone."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Someone may have replayed and deleted it between our open and our lock.
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)
                return None
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def read(self) -> list[dict[str, Any]]:
        """Every whole record in the file, in order."""
        assert self._fd is not None, "segment already released"
        chunks = []
        offset = 0
        while chunk := os.pread(self._fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
        lines = data.split(b"\n")
        tail = lines.pop()  # empty when the file ends with a newline, as every whole batch does
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self.skipped += 1
                log.error("spool %s line %d is not a record, skipped: %s", self.path, number, exc)
                continue
            records.append(record)
        if tail:
            self.skipped += 1
            log.warning("spool %s ends in a torn line (%d bytes), skipped", self.path, len(tail))
        return records

    def done(self) -> None:
        """Every record is stored: delete the file and drop the lock."""
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Drop the lock and keep the file for a later replay."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Segment:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Spool:
    """The spool directory of one ledger database, as one process writes and replays it."""

    def __init__(self, directory: Path, *, max_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self._max_bytes = max_bytes
        self._fd: int | None = None
        self._size = 0
        self._made = 0
        self._last_ns = 0

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Write `records` durably (one write, one fsync). Raises OSError if the disk refuses."""
        if not records:
            return
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        if self._fd is None or self._size >= self._max_bytes:
            self.seal()
            self._open_segment()
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except BaseException:
            self.seal()  # a partial line stays the last line of its file
            raise
        self._size += len(data)

    def seal(self) -> None:
        """Close the open segment, so that it can be claimed (by this process or another)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._size = 0

    def claim(self) -> Iterator[Segment]:
        """Segments no one else holds, oldest first, each locked; this process's open segment
        is sealed first. The caller must `done` or `release` each (or use it as a context)."""
        self.seal()
        for path in self.segments():
            segment = Segment.take(path)
            if segment is not None:
                yield segment

    def segments(self) -> list[Path]:
        """Every segment file in the directory (any owner's), oldest first."""
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(SUFFIX)]
        except FileNotFoundError:
            return []
        return [self.directory / n for n in sorted(names)]

    def close(self) -> None:
        """Seal the open segment (its records stay for the next replay)."""
        self.seal()

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._made += 1
        # Names sort in append order, even if the wall clock steps back.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = f"{self._last_ns:020d}-{os.getpid()}-{self._made:06d}"
        # Lock under a name `claim` ignores, then rename: a replayer must never catch the new
        # file between its creation and our lock, find it empty and delete it.
        hidden = self.directory / f".{name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            hidden.rename(self.directory / f"{name}{SUFFIX}")
            _fsync_dir(self.directory)  # the new name must survive a crash too
        except BaseException:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        self._fd = fd
        self._size = 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
