"""Turn the raw outputs of bench/run.sh into summary.json and a printed table.

    python bench/summarize.py RAW_DIR SUMMARY_JSON

Reads, per gateway G: peak-G.txt and peak-stream-G.txt (wrk), overhead-G.json (overhead.mjs),
ttft-G.json (ttft.mjs), rss-G.txt (kB), sweep-G.jsonl (openloop.mjs, optional); and
startup-tokenway.json, pyspy-tokenway.txt (py-spy raw, collapsed stacks), meta.txt. Missing
files leave their figures out (null) rather than failing the summary.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

GATEWAYS = ("tokenway", "portkey", "litellm")
# The targets the project set itself (see bench/README.md).
TARGETS = {
    "peak_ratio_vs_portkey": 8.0,
    "added_p50_ms": 0.4,
    "added_p99_ms": 2.0,
    "added_ttft_p50_ms": 1.0,
    "rss_mb": 120.0,
    "startup_ms": 1500.0,
}
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, Any]:
    """Requests/sec, latency percentiles (ms) and error counts from `wrk --latency` output."""
    out: dict[str, Any] = {"rps": None, "non_2xx": 0, "socket_errors": 0}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(m.group(1))
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        out[f"p{pct}_ms"] = round(float(value) * _UNIT_MS[unit], 3)
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        out["non_2xx"] = int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        out["socket_errors"] = sum(int(x) for x in m.groups())
    if m := re.search(r"(\d+) requests in", text):
        out["requests"] = int(m.group(1))
    # wrk counts error answers as requests: the figure that matters is successful answers per second
    if out["rps"] is not None and out.get("requests"):
        ok = max(0, out["requests"] - out["non_2xx"]) / out["requests"]
        out["ok_rps"] = round(out["rps"] * ok, 1)
    return out


def parse_threads(text: str) -> list[dict[str, Any]]:
    """`tid role cpu_seconds` lines (bench/run.sh) as dicts, busiest thread first."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append({"tid": int(parts[0]), "thread": parts[1], "cpu_s": float(parts[2])})
    return sorted(rows, key=lambda r: -float(r["cpu_s"]))


def sweep_headline(lines: list[dict[str, Any]]) -> float | None:
    """The highest offered rate whose p99 stayed under 50 ms with no errors."""
    good = [
        float(d["target_rps"])
        for d in lines
        if d.get("errors") == 0 and d.get("p99_ms") is not None and d["p99_ms"] < 50
    ]
    return max(good) if good else None


def pyspy_top(text: str, n: int = 15) -> list[dict[str, Any]]:
    """The `n` functions with the most own (leaf) samples, with their inclusive share too."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        samples += count
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    if not samples:
        return []
    return [
        {
            "frame": frame,
            "own_pct": round(100.0 * c / samples, 1),
            "total_pct": round(100.0 * total[frame] / samples, 1),
        }
        for frame, c in own.most_common(n)
    ]


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _json(path: Path) -> Any:
    text = _read(path)
    if not text or not text.strip():
        return None
    return json.loads(text.strip().splitlines()[-1])


def _mb(kb_text: str | None) -> float | None:
    return round(int(kb_text.strip()) / 1024, 1) if kb_text and kb_text.strip() else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def collect(raw: Path) -> dict[str, Any]:
    """Everything bench/run.sh measured, as one JSON-ready dict."""
    meta = dict(
        line.split("=", 1) for line in (_read(raw / "meta.txt") or "").splitlines() if "=" in line
    )
    gws: dict[str, Any] = {}
    for gw in GATEWAYS:
        peak_text = _read(raw / f"peak-{gw}.txt")
        if peak_text is None:
            continue
        stream_text = _read(raw / f"peak-stream-{gw}.txt")
        rss = _read(raw / f"rss-{gw}.txt")
        rss_idle = _read(raw / f"rss-idle-{gw}.txt")
        sweep_text = _read(raw / f"sweep-{gw}.jsonl")
        sweep = [json.loads(x) for x in (sweep_text or "").splitlines() if x.strip()]
        rounds = [
            parse_wrk(t)["ok_rps"]
            for t in (_read(p) for p in sorted(raw.glob(f"peak-round-*-{gw}.txt")))
            if t is not None
        ]
        gws[gw] = {
            "peak": parse_wrk(peak_text),
            "peak_rounds_ok_rps": rounds or None,
            "peak_rounds_median_ok_rps": statistics.median(rounds) if rounds else None,
            "peak_stream": parse_wrk(stream_text) if stream_text else None,
            "overhead": _json(raw / f"overhead-{gw}.json"),
            "ttft": _json(raw / f"ttft-{gw}.json"),
            "rss_mb": _mb(rss),
            "rss_idle_mb": _mb(rss_idle),
            "sweep": sweep or None,
            "sweep_headline_rps": sweep_headline(sweep) if sweep else None,
        }
    tw = gws.get("tokenway", {})
    if tw:
        tw["startup"] = _json(raw / "startup-tokenway.json")
        threads = _read(raw / "threads-tokenway.txt")
        tw["threads_under_profiled_peak"] = parse_threads(threads) if threads else None
    spy = _read(raw / "pyspy-tokenway.txt")
    ratios: dict[str, float | None] = {}
    for peer in ("portkey", "litellm"):
        if tw and peer in gws:
            ratios[f"peak_tokenway_over_{peer}"] = _ratio(
                tw["peak"]["rps"], gws[peer]["peak"]["rps"]
            )
            if tw.get("peak_rounds_median_ok_rps") and gws[peer].get("peak_rounds_median_ok_rps"):
                ratios[f"peak_rounds_median_tokenway_over_{peer}"] = _ratio(
                    tw["peak_rounds_median_ok_rps"], gws[peer]["peak_rounds_median_ok_rps"]
                )
            ts, ps = tw.get("peak_stream"), gws[peer].get("peak_stream")
            if ts and ps:
                ratios[f"peak_stream_tokenway_over_{peer}"] = _ratio(
                    ts.get("ok_rps"), ps.get("ok_rps")
                )
            to, po = tw.get("overhead"), gws[peer].get("overhead")
            if to and po:
                ratios[f"added_p50_{peer}_over_tokenway"] = _ratio(
                    po["added_p50_ms"], to["added_p50_ms"]
                )
            if tw.get("rss_mb") and gws[peer].get("rss_mb"):
                ratios[f"rss_{peer}_over_tokenway"] = _ratio(gws[peer]["rss_mb"], tw["rss_mb"])
    return {
        "meta": meta,
        "gateways": gws,
        "ratios": ratios,
        "targets": TARGETS,
        "pyspy_top": pyspy_top(spy) if spy else None,
    }


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def table(s: dict[str, Any]) -> str:
    """A plain-text summary: one column per gateway, then ratios and tokenway's targets."""
    gws = s["gateways"]
    names = [g for g in GATEWAYS if g in gws]

    def row(label: str, get: Any, spec: str = ".2f") -> str:
        cells = []
        for g in names:
            try:
                cells.append(_fmt(get(gws[g]), spec))
            except (KeyError, TypeError):
                cells.append("-")
        return f"{label:<34}" + "".join(f"{c:>12}" for c in cells)

    lines = [
        f"gateway benchmark, {s['meta'].get('date_utc', '?')} ({s['meta'].get('cpu', '?')})",
        f"{'':<34}" + "".join(f"{g:>12}" for g in names),
        row("peak ok req/s (wrk, 64 conns)", lambda g: g["peak"]["ok_rps"], ".0f"),
        row("  p50 ms under peak", lambda g: g["peak"]["p50_ms"], ".1f"),
        row("  p99 ms under peak", lambda g: g["peak"]["p99_ms"], ".1f"),
        row(
            "  errors (non-2xx + socket)",
            lambda g: g["peak"]["non_2xx"] + g["peak"]["socket_errors"],
            "d",
        ),
        row("peak ok req/s, median of rounds", lambda g: g["peak_rounds_median_ok_rps"], ".0f"),
        row("peak ok req/s, streamed", lambda g: g["peak_stream"]["ok_rps"], ".0f"),
        row("  non-2xx answers, streamed", lambda g: g["peak_stream"]["non_2xx"], "d"),
        row("added latency p50 ms", lambda g: g["overhead"]["added_p50_ms"], ".3f"),
        row("added latency p99 ms", lambda g: g["overhead"]["added_p99_ms"], ".3f"),
        row("added streamed TTFT p50 ms", lambda g: g["ttft"]["added_ttft_p50_ms"], ".3f"),
        row("added streamed TTFT p99 ms", lambda g: g["ttft"]["added_ttft_p99_ms"], ".3f"),
        row("  SSE reads/response, direct", lambda g: g["ttft"]["direct_reads_mean"], ".1f"),
        row("  SSE reads/response, gateway", lambda g: g["ttft"]["gateway_reads_mean"], ".1f"),
        row("RSS before any request MB", lambda g: g["rss_idle_mb"], ".1f"),
        row("RSS after load MB", lambda g: g["rss_mb"], ".1f"),
        row("sweep: max rate p99<50ms", lambda g: g["sweep_headline_rps"], ".0f"),
        row("start-up ms (median of 3)", lambda g: g["startup"]["startup_median_ms"], ".0f"),
        "",
        "ratios:",
    ]
    lines += [f"  {k:<40}{_fmt(v)}" for k, v in s["ratios"].items()]
    threads = gws.get("tokenway", {}).get("threads_under_profiled_peak")
    if threads:
        lines += ["", "tokenway CPU seconds per thread during the profiled peak run:"]
        lines += [f"  {t['thread']:<6}{t['tid']:>8}{t['cpu_s']:>8.2f}" for t in threads]
    if s.get("pyspy_top"):
        lines += ["", "tokenway under peak load, py-spy --gil top frames (own% / total%):"]
        lines += [
            f"  {f['own_pct']:5.1f} {f['total_pct']:5.1f}  {f['frame']}" for f in s["pyspy_top"]
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    summary = collect(Path(argv[1]))
    Path(argv[2]).write_text(json.dumps(summary, indent=2) + "\n")
    text = table(summary)
    Path(argv[2]).with_name("summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
