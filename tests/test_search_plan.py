"""The plan rule: auto mih plans are exact at t by the pigeonhole bound, explicit plans win, auto mode by cost."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.jobs.lookup import nearest_within
from imgdedup.pipeline.config import IndexConfig, load_config
from imgdedup.pipeline.errors import ConfigError
from imgdedup.pipeline.index import ClusterIndex
from imgdedup.pipeline.search_plan import (MihPlan, choose_plan, exact_up_to, mih_cost_ns, plans,
                                           probes_per_form, scan_cost_ns)


def copies_at(rows: np.ndarray, distance: int, plan: MihPlan, spread: bool, rng: np.random.Generator) -> np.ndarray:
    """Copies of packed 256-bit rows with ``distance`` bits flipped: at random, or dealt round the
    plan's substrings one bit at a time (so no substring keeps fewer flips than it must: the worst case
    for the pigeonhole bound)."""
    bits = np.unpackbits(rows, axis=1)
    b = plan.substring_bits
    m = 256 // b
    for row in bits:
        if spread:
            # Bit j of substring s for the k-th flip: substring k % m, a fresh bit of it each round.
            offsets = [rng.permutation(b) for _ in range(m)]
            chosen = [s * b + offsets[s][k // m] for k, s in ((k, k % m) for k in range(min(distance, m * b)))]
            chosen += list(rng.choice(np.arange(m * b, 256), max(0, distance - m * b), replace=False))
        else:
            chosen = rng.choice(256, distance, replace=False)
        row[np.asarray(chosen, dtype=np.int64)] ^= 1
    return np.packbits(bits, axis=1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.integers(0, 90), n=st.sampled_from([50, 400, 10**5, 10**7]),
       spread=st.booleans())
def test_the_rule_plan_finds_every_row_within_t_of_any_form(seed, t, n, spread):
    rng = np.random.default_rng(seed)
    plan = IndexConfig().mih_plan(t, 256, n)
    assert exact_up_to(plan, 256) >= t
    stored = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    index = ClusterIndex.build(stored, np.arange(300), stored[:1], np.zeros(300, np.int64))
    sources = rng.choice(300, 24, replace=False)
    queries = rng.integers(0, 256, (24, 8, 32), dtype=np.uint8)
    slots = rng.integers(0, 8, 24)  # the copy may be any dihedral form of the upload
    distances = rng.integers(0, t + 1, 24)
    distances[:4] = t  # the bound itself, every time
    for q in range(24):
        queries[q, slots[q]] = copies_at(stored[sources[q]][None], int(distances[q]), plan, spread, rng)[0]
    found = index.search(queries, t, mode="mih", substring_bits=plan.substring_bits, probe_radius=plan.probe_radius)
    for source, matches in zip(sources, found):
        assert source in set(matches.ids.tolist())
        assert (matches.distances <= t).all()


@pytest.mark.parametrize("t", [0, 5, 20, 29, 38, 47, 64, 95])
@pytest.mark.parametrize("n", [10**3, 10**5, 10**6, 10**7])
def test_the_rule_picks_the_cheapest_exact_plan(t, n):
    plan = choose_plan(t, 256, n, 8)
    exact = [p for p in plans(256) if exact_up_to(p, 256) >= t]
    assert plan in exact
    assert mih_cost_ns(plan, 256, n, 8) == min(mih_cost_ns(p, 256, n, 8) for p in exact)


def test_explicit_values_win_and_the_other_knob_is_chosen_for_them():
    assert IndexConfig(substring_bits=20, probe_radius=0).mih_plan(20, 256, 10**7) == (20, 0)
    # b = 16 alone: the smallest cost exact at 29 bits is radius 1 (16 * 2 - 1 = 31 >= 29).
    assert IndexConfig(substring_bits=16).mih_plan(29, 256, 10**6) == (16, 1)
    # radius 0 alone: at least 21 substrings for t = 20, so b <= 12.
    bits, radius = IndexConfig(probe_radius=0).mih_plan(20, 256, 10**7)
    assert radius == 0 and 256 // bits > 20
    # Nothing at radius 0 is exact at 64 bits: the widest bound (b = 8, 31 bits) is returned.
    assert IndexConfig(probe_radius=0).mih_plan(64, 256, 10**6) == (8, 0)


def test_an_explicit_approximate_plan_is_used_and_logged(caplog):
    rng = np.random.default_rng(4)
    stored = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    index = ClusterIndex.build(stored, np.arange(500), stored[:1], np.zeros(500, np.int64))
    config = load_config(overrides=["index.mode=mih", "index.substring_bits=16", "index.probe_radius=0",
                                    "dedup.max_false_merge_rate=0"])
    assert exact_up_to(config.index.mih_plan(64, 256, 500), 256) == 15
    # 16 bits flipped, one per substring: no substring is whole, so the approximate plan misses it.
    far = copies_at(stored[:1], 16, MihPlan(16, 0), spread=True, rng=rng)
    with caplog.at_level(logging.WARNING, logger="imgdedup.jobs.lookup"):
        assert nearest_within(index, far, config) == [None]
    assert "only up to 15 bits, below t = 64" in caplog.text
    exact = load_config(overrides=["index.mode=mih", "dedup.max_false_merge_rate=0"])
    assert nearest_within(index, far, exact) == [(0, 16)]


def test_auto_mode_compares_the_modelled_costs():
    index = IndexConfig(threads=1)
    # Small stores: scanning every row costs less than any plan's probes.
    assert index.search_mode(1000, 64) == "exact"
    # 10^7 images at the t rule's 20 bits: an exact plan probes ~2 000 buckets of ~2 rows each.
    assert index.search_mode(10**7, 20) == "mih"
    # At t = 64 every exact plan holds thousands of candidates per probe: the scan wins at any size.
    assert index.search_mode(10**7, 64) == "exact"
    # The crossing depends on t, not on n alone.
    assert index.search_mode(10**6, 29) == "mih" and index.search_mode(10**6, 64) == "exact"
    resolved = index.resolved(10**7, 20)
    assert (resolved.mode, resolved.substring_bits, resolved.probe_radius) == ("mih", *index.mih_plan(20, 256, 10**7))
    assert IndexConfig(mode="paper").resolved(10**7, 20).mode == "paper"
    with pytest.raises(ValueError, match="pass t"):
        index.search_mode(10**6)


def test_an_explicit_plan_may_be_chosen_by_auto_mode_even_if_approximate():
    # b = 20, r = 1 is exact up to 23 bits only; configured, auto mode still weighs it against the scan.
    assert IndexConfig(substring_bits=20, probe_radius=1, threads=1).search_mode(10**7, 64) == "mih"
    # The same plan left to the rule is never approximate: at t = 64 it falls back to the scan.
    assert IndexConfig(threads=1).search_mode(10**7, 64) == "exact"


def test_the_cost_model_counts_probes_and_buckets():
    assert probes_per_form(MihPlan(16, 1), 256) == 16 * 17
    assert probes_per_form(MihPlan(22, 2), 256) == 11 * (1 + 22 + 231)
    assert exact_up_to(MihPlan(22, 1), 256) == 21 and exact_up_to(MihPlan(16, 1), 256) == 31
    # More rows, more candidates per bucket; more threads, a cheaper scan.
    assert mih_cost_ns(MihPlan(20, 1), 256, 10**7, 8) > mih_cost_ns(MihPlan(20, 1), 256, 10**6, 8)
    assert scan_cost_ns(256, 10**6, 8, threads=2) == scan_cost_ns(256, 10**6, 8) / 2


@pytest.mark.parametrize("override", ["index.substring_bits=7", "index.substring_bits=fast", "index.probe_radius=3"])
def test_plan_knobs_are_checked(override):
    with pytest.raises(ConfigError):
        load_config(overrides=[override])


def test_plan_knobs_default_to_auto():
    config = load_config()
    assert (config.index.substring_bits, config.index.probe_radius) == ("auto", "auto")
    assert load_config(overrides=["index.substring_bits=20"]).index.substring_bits == 20
