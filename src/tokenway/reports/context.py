"""How much of each model's context window requests use: prompt tokens as a share of the
window, at p50/p90/p99/max, and which smaller-window models the p99 would fit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec


class ContextUse(msgspec.Struct, kw_only=True):
    model: str
    window: int | None
    requests: int
    p50_tokens: int
    p90_tokens: int
    p99_tokens: int
    max_tokens: int
    p99_share: float | None
    fits: list[str]


def _pct(sorted_values: list[int], q: float) -> int:
    # nearest-rank percentile: the smallest value with at least q of the values at or below it
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def context_use(rows: Iterable[dict[str, Any]], windows: dict[str, int | None]) -> list[ContextUse]:
    """Per model (the name clients used), the prompt-size distribution against its window.

    `fits` lists the other configured models with a smaller window that would still hold the
    p99 prompt: candidates for moving traffic to cheaper, smaller-window capacity.
    """
    prompts: dict[str, list[int]] = {}
    for row in rows:
        if int(row["status"]) < 400:
            prompts.setdefault(str(row["model"]), []).append(int(row["input_tokens"]))
    out: list[ContextUse] = []
    for model, values in sorted(prompts.items()):
        values.sort()
        window = windows.get(model)
        p99 = _pct(values, 99)
        fits = sorted(
            m
            for m, w in windows.items()
            if m != model and w is not None and p99 <= w and (window is None or w < window)
        )
        out.append(
            ContextUse(
                model=model,
                window=window,
                requests=len(values),
                p50_tokens=_pct(values, 50),
                p90_tokens=_pct(values, 90),
                p99_tokens=p99,
                max_tokens=values[-1],
                p99_share=p99 / window if window else None,
                fits=fits,
            )
        )
    return out


def render_context(uses: list[ContextUse]) -> str:
    head = (
        f"{'model':<24} {'window':>9} {'requests':>9} {'p50':>9} {'p90':>9} {'p99':>9} "
        f"{'max':>9} {'p99 use':>8}  p99 also fits"
    )
    lines = [head, "-" * len(head)]
    for u in uses:
        share = f"{u.p99_share:.1%}" if u.p99_share is not None else "-"
        lines.append(
            f"{u.model[:24]:<24} {u.window or '-':>9} {u.requests:>9} {u.p50_tokens:>9} "
            f"{u.p90_tokens:>9} {u.p99_tokens:>9} {u.max_tokens:>9} {share:>8}  "
            f"{', '.join(u.fits) or '-'}"
        )
    return "\n".join(lines)
