"""The router: what a request needs, which targets may take it, and the policies' orders."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from tokenway.config.schema import ProviderConfig
from tokenway.domain.types import (
    ChatRequest,
    ImageBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tokenway.errors import BadRequest, PermissionDenied
from tokenway.execution.failover import Target
from tokenway.providers.h1 import H1Pool
from tokenway.providers.upstream import Upstream
from tokenway.routing.router import eligible, needs, order
from tokenway.routing.stats import Stats

# Never sends: the router only reads a target's upstream name and region.
_POOL = H1Pool()


def target(
    provider: str,
    model: str = "m",
    *,
    region: str | None = None,
    weight: float = 1.0,
    context_window: int | None = None,
    capabilities: frozenset[str] | None = None,
) -> Target:
    cfg = ProviderConfig(
        name=provider, kind="openai", base_url="http://127.0.0.1:9/v1", region=region
    )
    return Target(
        Upstream(cfg, cfg.base_url, _POOL),
        model,
        weight=weight,
        context_window=context_window,
        capabilities=capabilities,
    )


def chat(
    *blocks: TextBlock | ImageBlock,
    tools: list[ToolSpec] | None = None,
    response_format: dict[str, object] | None = None,
) -> ChatRequest:
    return ChatRequest(
        model="chat",
        messages=[Message(role="user", content=list(blocks) or [TextBlock(text="hi")])],
        tools=tools or [],
        response_format=response_format,
    )


# needs()


def test_plain_text_needs_nothing() -> None:
    assert needs(chat()) == frozenset()


def test_tools_need_tools() -> None:
    assert needs(chat(tools=[ToolSpec(name="lookup")])) == {"tools"}


@pytest.mark.parametrize(
    ("fmt", "uses"),
    [
        ({"type": "json_object"}, {"json"}),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, {"json"}),
        ({"type": "text"}, set()),
        (None, set()),
    ],
)
def test_json_output_needs_json(fmt: dict[str, object] | None, uses: set[str]) -> None:
    assert needs(chat(response_format=fmt)) == uses


def test_an_image_needs_vision() -> None:
    req = chat(TextBlock(text="what is this?"), ImageBlock(url="https://example.com/cat.png"))
    assert needs(req) == {"vision"}


def test_an_image_in_a_tool_result_needs_vision() -> None:
    req = ChatRequest(
        model="chat",
        messages=[
            Message(role="user", content=[TextBlock(text="take a screenshot")]),
            Message(role="assistant", content=[ToolUseBlock(id="c1", name="screenshot", input={})]),
            Message(
                role="user",
                content=[
                    ToolResultBlock(
                        tool_use_id="c1",
                        content=[ImageBlock(media_type="image/png", data="iVBORw0KGgo=")],
                    )
                ],
            ),
        ],
        tools=[ToolSpec(name="screenshot")],
    )
    assert needs(req) == {"tools", "vision"}


def test_needs_add_up() -> None:
    req = chat(
        ImageBlock(url="https://example.com/a.png"),
        tools=[ToolSpec(name="t")],
        response_format={"type": "json_object"},
    )
    assert needs(req) == {"tools", "json", "vision"}


# eligible()


def test_capabilities_filter() -> None:
    text_only = target("a", capabilities=frozenset())
    tools = target("b", capabilities=frozenset({"tools"}))
    anything = target("c")  # None: it can do everything
    all3 = [text_only, tools, anything]
    assert eligible(all3, None, frozenset(), 10, 10, None) == all3
    assert eligible(all3, None, frozenset({"tools"}), 10, 10, None) == [tools, anything]
    assert eligible(all3, None, frozenset({"tools", "vision"}), 10, 10, None) == [anything]


def test_context_window_is_the_targets_own_or_the_models() -> None:
    small = target("a", context_window=1000)
    default = target("b")  # takes the model's window
    both = [small, default]
    assert eligible(both, 8000, frozenset(), 900, 100, None) == both  # exactly fits
    assert eligible(both, 8000, frozenset(), 900, 101, None) == [default]
    assert eligible(both, 8000, frozenset(), 7000, 1000, None) == [default]
    assert eligible(both, None, frozenset(), 100_000, 1000, None) == [default]


def test_a_targets_window_may_be_larger_than_the_models() -> None:
    big = target("a", context_window=200_000)
    default = target("b")
    assert eligible([big, default], 8000, frozenset(), 100_000, 10, None) == [big]


def test_regions_filter() -> None:
    us, cn, nowhere = target("us", region="us"), target("cn", region="cn"), target("x")
    assert eligible([us, cn, nowhere], None, frozenset(), 1, 1, None) == [us, cn, nowhere]
    assert eligible([us, cn, nowhere], None, frozenset(), 1, 1, frozenset({"cn"})) == [cn]
    both = frozenset({"cn", "us"})
    assert eligible([us, cn, nowhere], None, frozenset(), 1, 1, both) == [us, cn]


def test_no_target_in_the_regions_is_permission_denied() -> None:
    us, untagged = target("us", region="us"), target("x")
    with pytest.raises(PermissionDenied) as e:
        eligible([us, untagged], None, frozenset(), 1, 1, frozenset({"eu"}))
    assert e.value.status == 403 and "eu" in e.value.message


def test_too_long_for_every_target_is_context_length_exceeded() -> None:
    targets = [target("a", context_window=4000), target("b", context_window=8000)]
    with pytest.raises(BadRequest) as e:
        eligible(targets, None, frozenset(), 8000, 1, None)
    assert e.value.status == 400 and e.value.code == "context_length_exceeded"


def test_no_capable_target_is_a_bad_request_about_capabilities() -> None:
    targets = [target("a", capabilities=frozenset({"tools"}))]
    with pytest.raises(BadRequest) as e:
        eligible(targets, None, frozenset({"vision"}), 1, 1, None)
    assert e.value.code is None and "vision" in e.value.message


def test_the_error_names_what_excluded_the_allowed_targets() -> None:
    # The only capable target is outside the request's regions: the in-region one lacks the
    # capability, which is what the client must hear (not that its prompt is too long).
    local = target("local", region="eu", capabilities=frozenset())
    abroad = target("abroad", region="us")
    with pytest.raises(BadRequest) as e:
        eligible([local, abroad], None, frozenset({"tools"}), 1, 1, frozenset({"eu"}))
    assert e.value.code is None and "tools" in e.value.message


def test_too_long_for_the_capable_targets() -> None:
    weak_big = target("a", capabilities=frozenset(), context_window=100_000)
    capable_small = target("b", context_window=1000)
    with pytest.raises(BadRequest) as e:
        eligible([weak_big, capable_small], None, frozenset({"tools"}), 5000, 1, None)
    assert e.value.code == "context_length_exceeded"


def test_no_targets_at_all() -> None:
    with pytest.raises(BadRequest):
        eligible([], None, frozenset(), 1, 1, None)


# order()


def no_cost(t: Target, hit: float) -> Decimal | None:
    return None


def test_priority_keeps_the_configured_order() -> None:
    targets = [target("a"), target("b"), target("c")]
    assert order(targets, "priority", Stats(), no_cost, 10) == targets


@pytest.mark.parametrize("policy", ["priority", "weighted", "cost", "latency", "unknown"])
def test_one_target_is_its_own_order(policy: str) -> None:
    one = [target("a")]
    assert order(one, policy, Stats(), no_cost, 10, random.Random(1)) == one


def test_weighted_draws_first_places_in_proportion_to_weight() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 7.0}
    targets = [target(name, weight=w) for name, w in weights.items()]
    rng, draws = random.Random(20240601), 20_000
    first = Counter(
        order(targets, "weighted", Stats(), no_cost, 10, rng)[0].label for _ in range(draws)
    )
    for name, w in weights.items():
        share = first[f"{name}/m"] / draws
        # The standard error is under 0.004 at these counts; 0.02 is a generous bound.
        assert share == pytest.approx(w / 10.0, abs=0.02), name


def test_weighted_is_a_permutation_and_reproducible_by_seed() -> None:
    targets = [target(name, weight=w) for name, w in (("a", 1.0), ("b", 3.0), ("c", 0.5))]
    one = order(targets, "weighted", Stats(), no_cost, 10, random.Random(7))
    two = order(targets, "weighted", Stats(), no_cost, 10, random.Random(7))
    assert one == two
    assert sorted(t.label for t in one) == ["a/m", "b/m", "c/m"]


def test_weight_zero_goes_last() -> None:
    targets = [target("zero", weight=0.0), target("a"), target("b")]
    rng = random.Random(3)
    for _ in range(500):
        assert order(targets, "weighted", Stats(), no_cost, 10, rng)[-1].label == "zero/m"


def price(input_: str, cache_read: str) -> dict[str, Decimal]:
    return {"input": Decimal(input_), "cache_read": Decimal(cache_read)}


def test_cost_puts_the_cheapest_first_counting_the_learned_hit_rate() -> None:
    # Per 1M prompt tokens: "caching" costs 3.00 cold but 0.57 at a 90% hit rate;
    # "flat" costs 1.00 whatever is cached.
    prices = {"caching/m": price("3.00", "0.30"), "flat/m": price("1.00", "1.00")}
    seen_hits: dict[str, float] = {}

    def cost(t: Target, hit: float) -> Decimal | None:
        seen_hits[t.label] = hit
        p = prices[t.label]
        h = Decimal(str(hit))
        return p["input"] * (1 - h) + p["cache_read"] * h

    caching, flat = target("caching"), target("flat")
    stats = Stats()
    assert order([caching, flat], "cost", stats, cost, 10) == [flat, caching]
    assert seen_hits == {"caching/m": 0.0, "flat/m": 0.0}, "unknown hit rates count as 0"
    stats.get("caching/m").observe(0.1, 0.2, 2, prompt=1000, cached=900)
    assert order([caching, flat], "cost", stats, cost, 10) == [caching, flat]
    assert seen_hits["caching/m"] == pytest.approx(0.9)


def test_cost_ties_keep_the_configured_order_and_unknown_prices_go_last() -> None:
    a, b, c, d = target("a"), target("b"), target("c"), target("d")
    costs = {"a/m": None, "b/m": Decimal("2"), "c/m": Decimal("1"), "d/m": Decimal("2")}
    ordered = order([a, b, c, d], "cost", Stats(), lambda t, hit: costs[t.label], 10)
    assert ordered == [c, b, d, a]


def sampled(stats: Stats, t: Target, ttft: float) -> Target:
    stats.get(t.label).observe(ttft, ttft, 1, prompt=1, cached=0)
    return t


def test_latency_tries_unsampled_targets_first() -> None:
    stats = Stats()
    slow = sampled(stats, target("slow"), 2.0)
    fast = sampled(stats, target("fast"), 0.1)
    new1, new2 = target("new1"), target("new2")
    ordered = order([slow, new1, fast, new2], "latency", stats, no_cost, 10, random.Random(1))
    assert ordered == [new1, new2, fast, slow]


def test_latency_counts_per_token_time_for_the_expected_output() -> None:
    stats = Stats()
    quick_start = target("quick-start")
    stats.get(quick_start.label).observe(0.1, 10.1, 101, prompt=1, cached=0)  # 0.1 s a token
    steady = target("steady")
    stats.get(steady.label).observe(0.5, 1.5, 101, prompt=1, cached=0)  # 0.01 s a token
    rng = random.Random(1)
    assert order([quick_start, steady], "latency", stats, no_cost, 1, rng)[0] is quick_start
    assert order([quick_start, steady], "latency", stats, no_cost, 500, rng)[0] is steady


def test_latency_picks_the_better_of_two_random_choices() -> None:
    stats = Stats()
    best = sampled(stats, target("best"), 0.1)
    mid = sampled(stats, target("mid"), 0.2)
    worst = sampled(stats, target("worst"), 0.3)
    rng, draws = random.Random(99), 6000
    leaders: Counter[str] = Counter()
    for _ in range(draws):
        ordered = order([worst, mid, best], "latency", stats, no_cost, 10, rng)
        leaders[ordered[0].label] += 1
        # Behind the leader the rest stay sorted by predicted time.
        rest = [t for t in (best, mid, worst) if t is not ordered[0]]
        assert ordered[1:] == rest
    # Of the three pairs, two hold "best" and one holds "mid" without it; "worst" never wins.
    assert leaders["worst/m"] == 0
    assert leaders["best/m"] / draws == pytest.approx(2 / 3, abs=0.03)
    assert leaders["mid/m"] / draws == pytest.approx(1 / 3, abs=0.03)


def test_latency_with_two_sampled_puts_the_faster_first() -> None:
    stats = Stats()
    slow = sampled(stats, target("slow"), 0.9)
    fast = sampled(stats, target("fast"), 0.3)
    rng = random.Random(5)
    for _ in range(50):
        assert order([slow, fast], "latency", stats, no_cost, 10, rng) == [fast, slow]


def test_unknown_policy_keeps_the_order() -> None:
    targets = [target("a"), target("b")]
    assert order(targets, "fancy", Stats(), no_cost, 10) == targets
