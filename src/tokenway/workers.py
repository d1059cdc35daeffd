"""`tokenway serve --workers N`: N gateway processes on one port.

Each worker binds the port itself with SO_REUSEPORT, so the kernel spreads connections over
them; limits and budgets are shared through Redis (`storage.state`), which is why more than one
worker needs it. Metrics are written by every worker into a shared directory
(prometheus_client's multiprocess mode) and `/metrics` on any worker reports them all together.

The supervisor forks the workers before any event loop exists, restarts one that dies, and on
SIGTERM/SIGINT passes the signal on and waits for all of them to drain and exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other workers may bind too (the kernel balances them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when `parent` dies (Linux), so that a
    supervisor killed outright (SIGKILL, OOM) leaves no worker serving the port on its own."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _forget_gauges(pid: int) -> None:
    """Drop a dead worker's live gauges (`multiprocess_mode="live..."`, such as the batch lines
    it had in flight) from what `/metrics` sums; its counters stay, they still happened."""
    # Imported here, after METRICS_DIR_ENV is set: prometheus_client picks its value store
    # when first imported.
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def supervise(workers: int, run_worker: Callable[[int], int]) -> int:
    """Fork `workers` processes running `run_worker(index)`; return when all have exited."""
    own_dir = METRICS_DIR_ENV not in os.environ
    metrics_dir = os.environ.get(METRICS_DIR_ENV) or tempfile.mkdtemp(prefix="tokenway-metrics-")
    # Must be set before any worker imports prometheus_client: it picks its value store then.
    os.environ[METRICS_DIR_ENV] = metrics_dir
    children: dict[int, int] = {}
    stopping = False

    supervisor = os.getpid()

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with(supervisor)
            code = 1
            try:
                code = run_worker(index)
            finally:
                os._exit(code)
        children[pid] = index

    def stop(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        spawn(i)
    failures = 0
    try:
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = children.pop(pid, None)
            _forget_gauges(pid)
            if index is None or stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            print(f"tokenway: worker {index} exited ({code}); restarting", file=sys.stderr)
            failures += 1
            time.sleep(min(5.0, 0.2 * failures))  # a worker that cannot start must not spin
            spawn(index)
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
