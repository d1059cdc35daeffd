"""The order in which a request's targets are tried.

A model's route is its `targets` with its `policy`, or, for a request of a task class the model
lists under `tasks`, that task's tier. Filters come first and are absolute: a target that lacks
a capability the request uses (tools, images, JSON output), whose context window cannot hold
the prompt plus `max_tokens`, or whose provider's region the key or request does not allow,
is never tried. Health and headroom are judged per attempt by the attempt loop.

Policies then order what is left:

- `priority`: the configured order;
- `weighted`: a random order drawn by weight (a weighted shuffle);
- `cost`: cheapest expected cost of this request first, counting each target's learned
  prompt-cache hit rate;
- `latency`: lowest predicted time (learned TTFT + per-token time for `max_tokens`) first,
  with the leader picked by power-of-two choices so that load spreads over near-equals;
  targets without samples go first so that they get some.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

import msgspec

from tokenway.config.schema import HedgeConfig
from tokenway.domain.types import ChatRequest, ImageBlock, ToolResultBlock
from tokenway.errors import BadRequest, PermissionDenied
from tokenway.execution.failover import Target
from tokenway.routing.stats import Stats


class Route(msgspec.Struct, frozen=True):
    """The targets one request may use, their policy and its default deadline."""

    targets: list[Target]
    policy: str = "priority"
    timeout_s: float = 600.0
    context_window: int | None = None
    hedge: HedgeConfig | None = None


def needs(req: ChatRequest) -> frozenset[str]:
    """Capabilities a request uses."""
    out: set[str] = set()
    if req.tools:
        out.add("tools")
    fmt = req.response_format
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        out.add("json")
    for m in req.messages:
        if any(_has_image(b) for b in m.content):
            out.add("vision")
            break
    return frozenset(out)


def _has_image(block: object) -> bool:
    # A tool's result may carry an image too (a screenshot tool, say).
    if isinstance(block, ToolResultBlock):
        return any(isinstance(b, ImageBlock) for b in block.content)
    return isinstance(block, ImageBlock)


def eligible(
    targets: list[Target],
    context_window: int | None,
    uses: frozenset[str],
    prompt_tokens: int,
    max_tokens: int,
    regions: frozenset[str] | None,
) -> list[Target]:
    """The targets that can take the request (`context_window` is the model's, for targets
    that set none). Raises `PermissionDenied` when residency rules exclude every target (a
    request is never sent outside its regions) and `BadRequest` when nothing else fits."""
    # Each filter judges only what the previous ones let through, so that the error names the
    # reason that actually excluded the last targets (not, say, a capable target elsewhere).
    allowed = targets
    if regions is not None:
        allowed = [t for t in targets if t.upstream.region in regions]
        if not allowed:
            raise PermissionDenied(
                f"No target of this model is in the allowed regions ({', '.join(sorted(regions))})."
            )
    capable = [t for t in allowed if t.capabilities is None or uses <= t.capabilities]
    if uses and not capable:
        raise BadRequest(
            f"No target of this model supports what the request uses ({', '.join(sorted(uses))})."
        )
    fits = []
    for t in capable:
        window = t.context_window or context_window
        if window is None or prompt_tokens + max_tokens <= window:
            fits.append(t)
    if fits:
        return fits
    raise BadRequest(
        f"The prompt (about {prompt_tokens} tokens) plus max_tokens ({max_tokens}) does not fit "
        "the context window of any target of this model.",
        code="context_length_exceeded",
    )


def order(
    targets: list[Target],
    policy: str,
    stats: Stats,
    cost: Callable[[Target, float], Decimal | None],
    output_tokens: int,
    rng: random.Random | None = None,
) -> list[Target]:
    """`targets` in the order the policy would try them."""
    if len(targets) < 2 or policy == "priority":
        return targets
    r = rng or random
    if policy == "weighted":
        # Weighted shuffle: sort by u^(1/w), a standard way to draw without replacement.
        keyed = [(r.random() ** (1.0 / max(t.weight, 1e-9)), t) for t in targets]
        return [t for _, t in sorted(keyed, key=lambda kt: -kt[0])]
    if policy == "cost":
        priced = []
        for i, t in enumerate(targets):
            hit = stats.get(t.label).cache_hit or 0.0
            c = cost(t, hit)
            priced.append((c if c is not None else Decimal("Infinity"), i, t))
        return [t for _, _, t in sorted(priced, key=lambda p: (p[0], p[1]))]
    if policy == "latency":
        unknown = [t for t in targets if stats.get(t.label).predicted_s(output_tokens) is None]
        known = sorted(
            (t for t in targets if t not in unknown),
            key=lambda t: stats.get(t.label).predicted_s(output_tokens) or 0.0,
        )
        if len(known) >= 2:
            a, b = r.sample(known, 2)
            best = min((a, b), key=lambda t: stats.get(t.label).predicted_s(output_tokens) or 0.0)
            known.remove(best)
            known.insert(0, best)
        return unknown + known
    return targets
