"""Start-up time of a server: wall time from exec to its health URL answering 200.

    python bench/startup.py --url http://127.0.0.1:4141/healthz [--runs 3] [--keep-last PIDFILE]
        -- CMD ARGS...

Each run execs CMD, polls URL every 2 ms from this process, and records the time at which the
first 200 arrived. All runs but the last are stopped (SIGTERM, then SIGKILL) before the next;
with `--keep-last` the last server is left running and its pid written to PIDFILE. Prints one
JSON line: every run's figure in ms and their median.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse


def _healthy(host: str, port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=0.5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_once(
    cmd: list[str], url: str, log: str, timeout_s: float
) -> tuple[float, subprocess.Popen[bytes]]:
    """Exec `cmd` and return (ms until `url` answered 200, the process); raise if it never did."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        if _healthy(host, port, parts.path or "/"):
            return (time.perf_counter() - t0) * 1000.0, proc
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering; see {log}")
        time.sleep(0.002)
    _stop(proc)
    raise RuntimeError(f"server did not answer {url} within {timeout_s} s; see {log}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--keep-last", metavar="PIDFILE")
    p.add_argument("--log", default=os.devnull)
    p.add_argument("--timeout-s", type=float, default=30.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("a command to run is required after --")
    figures: list[float] = []
    for i in range(args.runs):
        ms, proc = measure_once(cmd, args.url, args.log, args.timeout_s)
        figures.append(round(ms, 1))
        if args.keep_last and i == args.runs - 1:
            with open(args.keep_last, "w") as f:
                f.write(f"{proc.pid}\n")
        else:
            _stop(proc)
    print(json.dumps({"startup_ms": figures, "startup_median_ms": statistics.median(figures)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
