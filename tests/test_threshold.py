"""pipeline/threshold.py: the t rule keeps expected false merges within the budget, and no tighter than it must."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.threshold import FalsePairTail, expected_false_merges, threshold_for

TAIL = FalsePairTail(intercept=-20.0, slope=0.2)  # p(64) = 10^-7.2, p(80) = 10^-4


def test_expected_false_merges_is_rate_times_pairs():
    assert expected_false_merges(1001, 80, TAIL) == pytest.approx(1e-4 * 1001 * 1000 / 2)
    assert expected_false_merges(10**6, -1, TAIL) == 0.0
    assert expected_false_merges(1, 80, TAIL) == 0.0
    assert FalsePairTail(0.0, 1.0).rate(5) == 1.0  # a probability never exceeds 1


def test_small_collections_keep_the_configured_t_and_large_ones_lower_it():
    # at 100 images: p(t) <= 2e-7 -> t <= 66.5, above the ceiling
    assert threshold_for(100, 1e-5, TAIL, ceiling=64) == 64
    assert threshold_for(1000, 1e-5, TAIL, ceiling=64) == 61  # p(t) <= 2e-8 -> t <= 61.5
    # at 10^7 images the budget is 100 merges over 5e13 pairs: p(t) <= 2e-12 -> t <= 41.5
    assert threshold_for(10**7, 1e-5, TAIL, ceiling=64) == 41
    # a budget nothing meets: no pair merges on its fingerprint alone
    assert threshold_for(10**7, 1e-12, FalsePairTail(-5.0, 0.2), ceiling=64) == -1
    assert threshold_for(0, 1e-5, TAIL, ceiling=64) == 64


def test_bad_budget_or_tail_is_refused():
    with pytest.raises(ValueError, match="max_false_merge_rate"):
        threshold_for(100, 0.0, TAIL, ceiling=64)
    with pytest.raises(ValueError, match="slope"):
        FalsePairTail(-10.0, 0.0)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 10**9), rate=st.floats(1e-9, 1e-2), intercept=st.floats(-40, 0),
       slope=st.floats(0.01, 2), ceiling=st.integers(0, 256))
def test_rule_is_within_budget_and_the_next_bit_is_not(n, rate, intercept, slope, ceiling):
    tail = FalsePairTail(intercept, slope)
    t = threshold_for(n, rate, tail, ceiling)
    assert -1 <= t <= ceiling
    assert expected_false_merges(n, t, tail) <= rate * n * (1 + 1e-6)
    if t < ceiling:
        assert expected_false_merges(n, t + 1, tail) > rate * n * (1 - 1e-6)
    # more images never allow a larger t
    assert threshold_for(n * 10, rate, tail, ceiling) <= t


def test_the_knobs_load_and_bad_ones_are_refused():
    from imgdedup.pipeline.config import load_config
    from imgdedup.pipeline.errors import ConfigError

    dedup = load_config().dedup
    assert dedup.false_pair_tail.slope == dedup.false_pair_tail_slope > 0
    # the shipped rule keeps the configured t for a small collection and lowers it for a large one
    assert threshold_for(100, dedup.max_false_merge_rate, dedup.false_pair_tail, dedup.threshold_t) == 64
    assert threshold_for(10**6, dedup.max_false_merge_rate, dedup.false_pair_tail, dedup.threshold_t) < 64
    assert dedup.threshold_for(100) == 64 and dedup.threshold_for(10**6) < 64
    # a budget of 0 switches the rule off; a negative one is refused
    assert load_config(overrides=["dedup.max_false_merge_rate=0"]).dedup.threshold_for(10**7) == 64
    with pytest.raises(ConfigError, match="max_false_merge_rate"):
        load_config(overrides=["dedup.max_false_merge_rate=-1e-5"])
    with pytest.raises(ConfigError, match="false_pair_tail_slope"):
        load_config(overrides=["dedup.false_pair_tail_slope=-0.1"])
