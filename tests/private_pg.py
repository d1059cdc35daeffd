"""A throwaway PostgreSQL server for tests that stop and start their database.

The shared server (127.0.0.1:5432) is never stopped: a test that needs an outage runs its own
server from a temporary data directory on a free port, with trust auth and fsync off.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.net import free_port

__all__ = ["PrivatePostgres", "free_port"]


class PrivatePostgres:
    """A throwaway PostgreSQL server: its own data directory and port, trust auth.

    `start` and `stop` (fast shutdown) may be called any number of times; the port and data
    stay the same, so clients find the server again. `remove` kills it and deletes its files.
    """

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else shutil.which("initdb")
        if initdb is None:
            pytest.fail("cannot start a private PostgreSQL: no initdb on this machine")
        self.bin = Path(initdb).parent
        self.root = Path(tempfile.mkdtemp(prefix="tokenway-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        # initdb refuses to run as root: run the server as the postgres user then
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as:
            shutil.chown(self.root, "postgres")
        self._pg("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync")

    def _pg(self, tool: str, *args: str) -> None:
        out = subprocess.run(
            [*self.run_as, str(self.bin / tool), *args], capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            pytest.fail(f"private PostgreSQL: {tool} failed: {out.stderr.strip()}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c unix_socket_directories={self.data}"
        )
        log = str(self.root / "log")
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut off), waiting until the server is gone."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, at once, and delete its data directory."""
        subprocess.run(
            [
                *self.run_as,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
