"""pipeline/threshold.py: the t rule keeps expected false merges within the budget, and no tighter than it must."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.hashing.verify import MIN_INLIERS
from imgdedup.pipeline.threshold import (FalsePairTail, expected_false_merges, expected_verified_false_merges,
                                         expected_zone_pairs, threshold_for, verify_threshold_for)

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


# The verified zone above t.

VERIFY = dict(max_false_merge_rate=1e-5, false_accept=3e-3, max_verifications_per_image=0.1, tail=TAIL)


def test_zone_is_off_at_a_ceiling_of_zero_or_below_the_direct_t():
    assert verify_threshold_for(10**6, 40, ceiling=0, **VERIFY) == 40
    assert verify_threshold_for(10**6, 40, ceiling=40, **VERIFY) == 40
    assert verify_threshold_for(10**6, 40, ceiling=30, **VERIFY) == 40
    assert expected_verified_false_merges(10**6, 40, 40, TAIL, 3e-3) == 0.0


def test_zone_reaches_above_the_direct_t_by_the_verifier_s_false_accept_rate():
    # 10^6 images: direct p(t) <= 2e-11 -> t = 46, which spends 7.9 of the budget of 10 false merges;
    # the zone's pairs may add (10 - 7.9) / 3e-3 = 700: p(t) <= 1.4e-9 -> t = 55
    t = threshold_for(10**6, 1e-5, TAIL, ceiling=64)
    assert t == 46
    assert verify_threshold_for(10**6, t, ceiling=88, **VERIFY) == 55
    # a verifier that accepts nothing falsely leaves only the cost budget: p(t) <= 2e-7 -> t = 66
    assert verify_threshold_for(10**6, t, ceiling=88, **{**VERIFY, "false_accept": 0.0}) == 66
    # 100 images: direct 3.1e-4 of the budget of 1e-3; p(t) <= (6.9e-4 / 3e-3) / 4950 -> t = 78; the
    # ceiling binds a smaller collection
    assert verify_threshold_for(100, 64, ceiling=88, **VERIFY) == 78
    assert verify_threshold_for(10, 64, ceiling=70, **VERIFY) == 70
    with pytest.raises(ValueError, match="max_verifications_per_image"):
        verify_threshold_for(100, 64, ceiling=88, **{**VERIFY, "max_verifications_per_image": 0.0})


def test_a_direct_t_that_spends_the_whole_budget_leaves_no_zone():
    # at 10^6 images t = 64 alone expects far more false merges than the budget of 10
    assert verify_threshold_for(10**6, 64, ceiling=88, **VERIFY) == 64


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 10**9), rate=st.floats(1e-9, 1e-2), false_accept=st.floats(1e-9, 1.0),
       verifications=st.floats(1e-4, 100), intercept=st.floats(-40, 0), slope=st.floats(0.01, 2),
       t_direct=st.integers(0, 128), ceiling=st.integers(0, 256))
def test_zone_meets_both_budgets_is_never_below_t_direct_and_shrinks_with_n(n, rate, false_accept, verifications,
                                                                         intercept, slope, t_direct, ceiling):
    tail = FalsePairTail(intercept, slope)
    knobs = dict(max_false_merge_rate=rate, false_accept=false_accept, max_verifications_per_image=verifications,
                 tail=tail)
    t = verify_threshold_for(n, t_direct, ceiling=ceiling, **knobs)
    assert t_direct <= t <= max(ceiling, t_direct)
    direct = expected_false_merges(n, t_direct, tail)
    if t > t_direct:
        zone_pairs = expected_zone_pairs(n, t_direct, t, tail)  # different-photo pairs in (t_direct, t]
        assert zone_pairs * false_accept <= max(rate * n - direct, 0.0) * (1 + 1e-6) + 1e-9
        assert zone_pairs <= verifications * n * (1 + 1e-6) + 1e-9
        if t < ceiling:  # the next bit breaks one budget
            wider = expected_zone_pairs(n, t_direct, t + 1, tail)
            assert (wider * false_accept > max(rate * n - direct, 0.0) * (1 - 1e-6)
                    or wider > verifications * n * (1 - 1e-6))
    # more images never widen the zone (for the same direct t)
    assert verify_threshold_for(n * 10, t_direct, ceiling=ceiling, **knobs) <= t


def test_the_zone_knobs_load():
    from imgdedup.pipeline.config import load_config
    from imgdedup.pipeline.errors import ConfigError

    dedup = load_config().dedup
    assert (dedup.verify_up_to, dedup.verify_min_inliers) == (88, 12)
    assert dedup.verify_min_inliers == MIN_INLIERS  # the floor the verifier's own tests hold it to
    # with the shipped knobs the zone reaches well above the direct t at every size, and the
    # rule's t_verify falls with n like the direct t
    sizes = [10**3, 10**5, 10**6, 10**7]
    direct = [dedup.threshold_for(n) for n in sizes]
    verify = [dedup.verify_threshold_for(n, t) for n, t in zip(sizes, direct)]
    assert all(v > t for v, t in zip(verify, direct))
    assert verify == sorted(verify, reverse=True)
    direct_part, verified_part = dedup.expected_false_merges(10**6, direct[2], verify[2])
    assert direct_part + verified_part <= 10  # one budget: 1e-5 of 10^6 images
    off = load_config(overrides=["dedup.verify_up_to=0"]).dedup
    assert off.verify_threshold_for(10**6, direct[2]) == direct[2]
    with pytest.raises(ConfigError, match="max_verifications_per_image"):
        load_config(overrides=["dedup.max_verifications_per_image=0"])
    with pytest.raises(ConfigError, match="verifier_false_accept"):
        load_config(overrides=["dedup.verifier_false_accept=2"])


@given(st.integers(2, 10**8), st.floats(-3.0, 0.0), st.floats(0.2, 2.0), st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_key_rule_keeps_key_pairs_within_the_verification_budget(n, intercept, slope, floor):
    from imgdedup.pipeline.threshold import KeyShareTail, expected_key_pairs, key_min_shared_for

    tail = KeyShareTail(intercept, slope)
    m = key_min_shared_for(n, floor=floor, tail=tail, max_verifications_per_image=1.0)
    assert m >= floor
    assert expected_key_pairs(n, m, tail) <= n
    if m > floor:  # one key fewer would cost more verifications than the budget
        assert expected_key_pairs(n, m - 1, tail) > n
    # With a false-merge budget left over by the direct part and the zone, the keys' false merges fit in it.
    room = 1e-5 * n / 3
    within = key_min_shared_for(n, floor=floor, tail=tail, max_verifications_per_image=1.0, false_accept=3e-6,
                                false_merge_room=room)
    assert within >= m and expected_key_pairs(n, within, tail) * 3e-6 <= room
    if within > m:
        assert expected_key_pairs(n, within - 1, tail) * 3e-6 > room


def test_key_rule_rises_with_the_collection():
    from imgdedup.pipeline.config import load_config

    dedup = load_config().dedup
    sizes = [10**3, 10**5, 10**6, 10**7]
    rules = [dedup.key_min_shared_for(n) for n in sizes]
    assert rules == sorted(rules) and rules[0] == dedup.key_min_shared and rules[-1] > rules[0]
