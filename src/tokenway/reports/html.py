"""A self-contained HTML report: tables and inline SVG charts, no script, no network.

Charts: spend and revenue by model (bars), gross margin against the prompt-cache hit rate per
model (lines, today's point marked), and p99 context-window use per model (bars). A table says
what batch and async work saved against realtime prices, per mode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from tokenway.reports.cache_margin import MarginCurve
from tokenway.reports.context import ContextUse
from tokenway.reports.savings import SavingsReport, headline
from tokenway.reports.spend import Group

_W, _H, _PAD = 640, 260, 48
_COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")


def _bars(title: str, labels: list[str], series: list[tuple[str, list[float]]]) -> str:
    top = max([v for _, vs in series for v in vs] + [0.0]) or 1.0
    n = max(1, len(labels))
    slot = (_W - 2 * _PAD) / n
    width = slot * 0.8 / max(1, len(series))
    parts = [
        f'<svg class="chart" width="{_W}" height="{_H}" role="img"><title>{escape(title)}</title>'
    ]
    parts.append(
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#999"/>'
    )
    for i, label in enumerate(labels):
        x0 = _PAD + i * slot + slot * 0.1
        for j, (name, values) in enumerate(series):
            v = values[i]
            h = (_H - 2 * _PAD) * v / top
            parts.append(
                f'<rect class="bar" data-value="{v:.9g}" x="{x0 + j * width:.1f}" '
                f'y="{_H - _PAD - h:.1f}" width="{width:.1f}" height="{h:.1f}" '
                f'fill="{_COLOURS[j % len(_COLOURS)]}"><title>{escape(name)} {escape(label)}: '
                f"{v:.9g}</title></rect>"
            )
        parts.append(
            f'<text x="{_PAD + (i + 0.5) * slot:.1f}" y="{_H - _PAD + 16}" font-size="11" '
            f'text-anchor="middle">{escape(label[:18])}</text>'
        )
    parts.append(f'<text x="{_PAD}" y="16" font-size="11">max {top:.6g}</text>')
    for j, (name, _) in enumerate(series):
        parts.append(
            f'<text x="{_W - _PAD - 120}" y="{16 + 14 * j}" font-size="11" '
            f'fill="{_COLOURS[j % len(_COLOURS)]}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _curves(curves: list[MarginCurve]) -> str:
    values = [float(p.margin_usd) for c in curves for p in c.points] or [0.0]
    lo, hi = min(*values, 0.0), max(*values, 0.0)
    span = (hi - lo) or 1.0

    def y(v: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * (v - lo) / span

    def x(h: float) -> float:
        return _PAD + (_W - 2 * _PAD) * h

    parts = [
        f'<svg class="chart" width="{_W}" height="{_H}" role="img">'
        "<title>margin vs hit rate</title>"
    ]
    parts.append(
        f'<line x1="{_PAD}" y1="{y(0):.1f}" x2="{_W - _PAD}" y2="{y(0):.1f}" stroke="#999"/>'
    )
    for k, c in enumerate(curves):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = " ".join(f"{x(p.hit_rate):.1f},{y(float(p.margin_usd)):.1f}" for p in c.points)
        parts.append(
            f'<polyline class="curve" points="{pts}" fill="none" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        if c.actual_hit_rate is not None:
            today = float(c.revenue_usd - c.actual_cost_usd)
            parts.append(
                f'<circle class="today" cx="{x(c.actual_hit_rate):.1f}" cy="{y(today):.1f}" r="5" '
                f'fill="{colour}"><title>{escape(c.model)} today: hit rate '
                f"{c.actual_hit_rate:.1%}, margin {today:.6g} USD</title></circle>"
            )
        parts.append(
            f'<text x="{_W - _PAD - 120}" y="{16 + 14 * k}" font-size="11" fill="{colour}">'
            f"{escape(c.model)}</text>"
        )
    for h in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{x(h):.1f}" y="{_H - _PAD + 16}" font-size="11" text-anchor="middle">'
            f"{h:.0%}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _money(v: Decimal) -> str:
    return f"{v:.9f}"


def _savings(report: SavingsReport | None) -> str:
    if report is None:
        return ""
    rows = "".join(
        f"<tr><td>{escape(g.name)}</td><td>{g.requests}</td><td>{g.attempts}</td>"
        f"<td>{_money(g.cost_usd)}</td><td>{_money(g.realtime_cost_usd)}</td>"
        f"<td>{_money(g.saving_usd)}</td>"
        f"<td>{'-' if g.saving_pct is None else f'{g.saving_pct:.1f}%'}</td></tr>"
        for g in [*report.modes, report.total]
    )
    return (
        "<h2>Batch and async savings against realtime prices</h2>\n"
        f"<p>{escape(headline(report))}.</p>\n"
        '<table class="savings"><tr><th>mode</th><th>requests</th><th>attempts</th>'
        "<th>cost USD</th><th>at realtime USD</th><th>saving USD</th><th>saving</th></tr>"
        f"{rows}</table>\n"
    )


def render_html(
    groups: list[Group],
    total: Group,
    curves: list[MarginCurve],
    uses: list[ContextUse],
    *,
    savings: SavingsReport | None = None,
) -> str:
    """The whole report as one HTML document (with the savings table when `savings` is
    given)."""
    rows = "".join(
        f"<tr><td>{escape(g.name)}</td><td>{g.requests}</td><td>{g.input_tokens}</td>"
        f"<td>{g.cache_read_tokens}</td><td>{g.output_tokens}</td><td>{_money(g.cost_usd)}</td>"
        f"<td>{_money(g.revenue_usd)}</td><td>{_money(g.margin_usd)}</td></tr>"
        for g in [*groups, total]
    )
    spend = _bars(
        "spend and revenue by model",
        [g.name for g in groups],
        [
            ("cost USD", [float(g.cost_usd) for g in groups]),
            ("revenue USD", [float(g.revenue_usd) for g in groups]),
        ],
    )
    context = _bars(
        "p99 prompt tokens by model",
        [u.model for u in uses],
        [("p99 prompt tokens", [float(u.p99_tokens) for u in uses])],
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tokenway report</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;color:#111}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.chart{{border:1px solid #eee;margin:8px 0}}</style>
</head><body>
<h1>tokenway report</h1><p>generated {stamp}</p>
<h2>Spend, revenue and margin by model</h2>
<table><tr><th>model</th><th>requests</th><th>input</th><th>cached</th><th>output</th>
<th>cost USD</th><th>revenue USD</th><th>margin USD</th></tr>{rows}</table>
{spend}
{_savings(savings)}<h2>Gross margin against the prompt-cache hit rate</h2>
<p>Each model's traffic re-costed at 0-100% hit rate; the dot is today.</p>
{_curves(curves)}
<h2>Context-window use</h2>
{context}
</body></html>
"""
