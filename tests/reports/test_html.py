"""`tokenway report --html` on a ledger of mixed traffic through a real gateway, rendered in
headless Chromium: the page's charts must have data, on screen as well as in the DOM."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KEY, clients_for, close_clients
from tests.e2e.stack import Stack


def png_colours(path: Path) -> set[tuple[int, ...]]:
    """Distinct pixel colours of an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour_type in (2, 6)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    colours: set[tuple[int, ...]] = set()
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        if y % 4 == 0:
            for x in range(0, stride, channels * 4):
                colours.add(tuple(line[x : x + 3]))
        prev = line
    return colours


DAY_START = 1_795_737_600.0  # 2026-11-27T00:00:00Z


def mixed_doc(ledger: Path) -> dict[str, Any]:
    fast = {"ttft_ms": 1, "tokens_per_s": 5000, "output_tokens": 20}
    return {
        "storage": {"ledger": f"sqlite:///{ledger}"},
        "sim": [
            {"name": "so", "kind": "openai", "scenario": {**fast, "cache_min_tokens": 64}},
            {"name": "sa", "kind": "anthropic", "scenario": fast},
        ],
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": "sim://so"},
            {"name": "anthropic", "kind": "anthropic", "base_url": "sim://sa"},
        ],
        "models": [
            {
                "name": "cheap",
                "context_window": 128000,
                "targets": [{"provider": "openai", "model": "gpt-4o-mini"}],
            },
            {
                "name": "strong",
                "context_window": 200000,
                "targets": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}],
            },
        ],
        "keys": [{"name": "app", "key": KEY}],
    }


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    tmp = tmp_path_factory.mktemp("html")
    s = Stack(mixed_doc(tmp / "ledger.db")).start()
    long_doc = " ".join(f"clause{i}" for i in range(400))
    oai, ant = clients_for(s).openai(), clients_for(s).anthropic()
    # A simulated day: the gateway's clock steps 40 minutes per request through 2026-11-27.
    step = iter(range(1000))
    s.rt.now = lambda: DAY_START + next(step) * 2400.0
    for i in range(12):
        oai.chat.completions.create(
            model="cheap",
            messages=[{"role": "user", "content": f"{long_doc} q{i}"}],
            extra_headers={"x-tokenway-task": "search"},
        )
        list(
            oai.chat.completions.create(
                model="cheap",
                messages=[{"role": "user", "content": f"hi {i}"}],
                stream=True,
                extra_headers={"x-tokenway-task": "chat"},
            )
        )
        ant.messages.create(
            model="strong",
            max_tokens=40,
            messages=[{"role": "user", "content": f"task {i}"}],
            extra_headers={"x-tokenway-task": "agent"},
        )
    s.flush()
    yield s, tmp
    close_clients(s)
    s.stop()


def test_html_report_renders_charts_with_data(traffic: tuple[Stack, Path]) -> None:
    stack, tmp = traffic
    from tokenway.accounting.ledger import read_requests

    stamps = sorted(float(r["ts"]) for r in read_requests(stack.config.raw.storage.ledger))
    assert len(stamps) == 36 and DAY_START <= stamps[0] < stamps[-1] < DAY_START + 86400
    assert stamps[-1] - stamps[0] > 23 * 3600  # the traffic spans the day
    cfg = tmp / "c.yaml"
    cfg.write_text(
        "storage: {ledger: '" + stack.config.raw.storage.ledger + "'}\n"
        "providers:\n"
        "  - {name: openai, kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
        "  - {name: anthropic, kind: anthropic, base_url: 'http://127.0.0.1:9'}\n"
        "models:\n"
        "  - {name: cheap, context_window: 128000,"
        " targets: [{provider: openai, model: gpt-4o-mini}]}\n"
        "  - {name: strong, context_window: 200000,"
        " targets: [{provider: anthropic, model: claude-sonnet-4-6}]}\n"
    )
    out = tmp / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "tokenway", "report", "--config", str(cfg), "--html", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (installed by .ci/run)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chrome'}",
    ]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=90
    ).stdout
    heights = [float(h) for h in re.findall(r'class="bar"[^>]*height="([\d.]+)"', dom)]
    assert len(heights) >= 4 and sum(h > 1 for h in heights) >= 3
    assert dom.count('class="curve"') == 2 and dom.count('class="today"') == 2
    shot = tmp / "report.png"
    subprocess.run(
        [chromium, *flags, "--window-size=900,1400", f"--screenshot={shot}", out.as_uri()],
        capture_output=True,
        timeout=90,
    )
    colours = png_colours(shot)
    # the chart palette is on screen: blue and red bars, green curve
    assert any(b > 180 and r < 80 for r, g, b in colours)
    assert any(r > 180 and g < 80 and b < 80 for r, g, b in colours)
