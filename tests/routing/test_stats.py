"""TargetStats: learned first-token and per-token times, the p95, and the cache hit rate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenway.routing.stats import Stats, TargetStats


def test_nothing_is_predicted_before_a_sample() -> None:
    s = TargetStats()
    assert s.predicted_s(100) is None
    assert s.ttft_p95() is None
    assert s.cache_hit is None and s.samples == 0


def test_first_sample_is_taken_as_is() -> None:
    s = TargetStats()
    s.observe(0.2, 1.2, 11, prompt=1000, cached=250)
    assert s.ttft_s == pytest.approx(0.2)
    assert s.per_token_s == pytest.approx(0.1)  # 1.0 s over the 10 tokens after the first
    assert s.cache_hit == pytest.approx(0.25)
    assert s.predicted_s(21) == pytest.approx(0.2 + 20 * 0.1)
    assert s.predicted_s(0) == pytest.approx(0.2)


def test_later_samples_move_the_average_a_fifth_of_the_way() -> None:
    s = TargetStats()
    s.observe(1.0, 1.0, 1, prompt=100, cached=0)
    s.observe(2.0, 2.0, 1, prompt=100, cached=100)
    assert s.ttft_s == pytest.approx(1.2)
    assert s.cache_hit == pytest.approx(0.2)
    assert s.samples == 2


def test_without_a_first_token_time_the_total_stands_for_it() -> None:
    s = TargetStats()
    s.observe(None, 0.8, 50, prompt=10, cached=0)
    assert s.ttft_s == pytest.approx(0.8)
    assert s.per_token_s is None, "no split between first token and the rest is known"
    assert s.predicted_s(50) == pytest.approx(0.8)


def test_single_token_answers_teach_no_per_token_time() -> None:
    s = TargetStats()
    s.observe(0.1, 0.5, 1, prompt=10, cached=0)
    assert s.per_token_s is None


def test_empty_prompt_teaches_no_hit_rate_and_cached_is_clamped() -> None:
    s = TargetStats()
    s.observe(0.1, 0.2, 2, prompt=0, cached=0)
    assert s.cache_hit is None
    s.observe(0.1, 0.2, 2, prompt=100, cached=500)
    assert s.cache_hit == pytest.approx(1.0)


def test_p95_needs_twenty_samples() -> None:
    s = TargetStats()
    for i in range(19):
        s.observe(float(i), float(i), 1, prompt=1, cached=0)
    assert s.ttft_p95() is None
    s.observe(19.0, 19.0, 1, prompt=1, cached=0)
    assert s.ttft_p95() is not None


@pytest.mark.parametrize(("n", "rank"), [(20, 19), (21, 20), (40, 38), (100, 95), (200, 190)])
def test_p95_is_the_nearest_rank(n: int, rank: int) -> None:
    # With 20 samples the p95 is the 19th smallest, not the slowest one.
    s = TargetStats()
    for i in range(n, 0, -1):
        s.observe(float(i), float(i), 1, prompt=1, cached=0)
    assert s.ttft_p95() == float(rank)


def test_p95_covers_only_the_recent_samples() -> None:
    s = TargetStats()
    for _ in range(200):
        s.observe(10.0, 10.0, 1, prompt=1, cached=0)
    for _ in range(200):
        s.observe(0.1, 0.1, 1, prompt=1, cached=0)
    assert s.ttft_p95() == pytest.approx(0.1)


@given(
    st.lists(
        st.tuples(
            st.floats(0, 60, allow_nan=False),
            st.floats(0, 60, allow_nan=False),
            st.integers(0, 10_000),
            st.integers(0, 10**6),
            st.integers(0, 10**6),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_learned_values_stay_in_range(
    samples: list[tuple[float, float, int, int, int]],
) -> None:
    s = TargetStats()
    for ttft, extra, out, prompt, cached in samples:
        s.observe(ttft, ttft + extra, out, prompt, cached)
    ttfts = [t for t, *_ in samples]
    assert s.ttft_s is not None and min(ttfts) - 1e-9 <= s.ttft_s <= max(ttfts) + 1e-9
    assert s.cache_hit is None or 0.0 <= s.cache_hit <= 1.0 + 1e-12
    assert s.per_token_s is None or s.per_token_s >= 0.0
    p95 = s.ttft_p95()
    assert p95 is None or p95 in ttfts


def test_stats_are_kept_per_label() -> None:
    stats = Stats()
    stats.get("a/m").observe(0.1, 0.1, 1, prompt=1, cached=0)
    assert stats.get("a/m") is stats.get("a/m")
    assert stats.get("b/m").samples == 0


@pytest.mark.parametrize(("pct", "rank"), [(1, 1), (50, 10), (90, 18), (95, 19), (100, 20)])
def test_percentiles_are_nearest_ranks(pct: int, rank: int) -> None:
    s = TargetStats()
    for i in range(20, 0, -1):
        s.observe(float(i), float(i), 1, prompt=1, cached=0)
    assert s.ttft_percentile(pct) == float(rank)
