"""Multi-index hashing (mih mode): never a match beyond t, every match within the pigeonhole bound, equal to
exact mode where the bound covers t, and recall above a floor on edits whose distances follow real ones."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.hashing.bits import dihedral_hamming
from imgdedup.pipeline.index import ClusterIndex, near_duplicate_components, substring_pairs
from tests.index.data import NBYTES, fingerprint_set, flip_bits, nearest_labels


def flip_exactly(rows: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies of packed rows with ``counts[i]`` distinct bits of row ``i`` flipped."""
    bits = np.unpackbits(rows, axis=-1)
    for row, count in zip(bits, counts):
        row[rng.choice(bits.shape[1], count, replace=False)] ^= 1
    return np.packbits(bits, axis=-1)


def positions(matches) -> list[set]:
    return [set(m.ids.tolist()) for m in matches]


def queries_near(rng, fingerprints, m, forms):
    """(m, forms, NBYTES) queries: stored rows with 0..70 bits flipped, random extra forms."""
    plain = flip_exactly(fingerprints[rng.integers(0, len(fingerprints), m)], rng.integers(0, 71, m), rng)
    extra = rng.integers(0, 256, (m, forms - 1, NBYTES), dtype=np.uint8)
    return np.concatenate([plain[:, None], extra], axis=1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), t=st.integers(0, 80), bits=st.sampled_from([8, 12, 16]),
       radius=st.sampled_from([0, 1, 2]), forms=st.sampled_from([1, 8]), clustered=st.booleans())
def test_mih_never_returns_a_row_beyond_t_and_finds_all_within_the_pigeonhole_bound(seed, n, t, bits, radius, forms,
                                                                                      clustered):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, 4, clustered)
    index = ClusterIndex.build(fingerprints, np.arange(n), centres, nearest_labels(fingerprints, centres))
    queries = queries_near(rng, fingerprints, 20, forms)
    found = index.search(queries, t, mode="mih", substring_bits=bits, probe_radius=radius)
    distances = dihedral_hamming(queries, fingerprints)
    for q, matches in enumerate(found):
        assert (matches.distances <= t).all()
        assert np.array_equal(matches.distances, distances[q, matches.ids])
        assert len(set(matches.ids.tolist())) == len(matches.ids)
        # Every row within the bound of any form shares a substring within the radius with that form.
        bound = min(t, 256 // bits * (radius + 1) - 1)
        assert set(np.flatnonzero(distances[q] <= bound).tolist()) <= set(matches.ids)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200), t=st.integers(0, 64))
def test_mih_equals_exact_mode_where_the_bound_covers_t(seed, n, t):
    # 32 substrings of 8 bits probed at radius 1 find every row within 63 bits of a plain query.
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, 3, clustered=True)
    index = ClusterIndex.build(fingerprints, np.arange(n), centres, nearest_labels(fingerprints, centres))
    queries = flip_bits(fingerprints[rng.integers(0, max(n, 1), 30)] if n else fingerprints[:0], 0.1, rng)
    expected = positions(index.search(queries, min(t, 63), mode="exact"))
    assert positions(index.search(queries, min(t, 63), mode="mih", substring_bits=8, probe_radius=1)) == expected


def test_mih_searches_members_added_after_the_build():
    rng = np.random.default_rng(3)
    fingerprints, centres = fingerprint_set(rng, 500, 8, clustered=False)
    index = ClusterIndex.build(fingerprints, np.arange(500), centres, nearest_labels(fingerprints, centres))
    added = flip_exactly(fingerprints[:1], np.array([5]), rng)[0]
    index.add(added, "added", centre_threshold=256)
    found = index.search(fingerprints[:1], 10, mode="mih")[0]
    assert set(found.ids.tolist()) == {0, "added"}


#: Smallest-over-forms distance between an original and an edited copy, measured on
#: 2 800 pairs of the labelled sets ../shared/bench/transforms.py builds from the dev
#: and distinct photos (docs/index.md): the quantiles, then the pairs within t = 64.
REAL_EDIT_QUANTILES = {0.10: 0, 0.25: 2, 0.50: 6, 0.75: 18, 0.83: 48}


def real_like_distances(rng: np.random.Generator, m: int, t: int) -> np.ndarray:
    """Distances drawn from the measured quantiles (piecewise uniform between them), those above t left out."""
    levels = np.array([0.0, *REAL_EDIT_QUANTILES, 0.873])
    values = np.array([0, *REAL_EDIT_QUANTILES.values(), t])
    return np.round(np.interp(rng.uniform(0, levels[-1], m), levels, values)).astype(int)


def test_mih_recall_on_real_like_edits_is_above_its_floor():
    # Uniformly placed flips are the hard case (real edits change some bits far more
    # than others, and leave more substrings whole): 0.99 here, 0.996 on the real pairs.
    rng = np.random.default_rng(11)
    stored = rng.integers(0, 256, (20_000, NBYTES), dtype=np.uint8)
    originals = rng.choice(len(stored), 2000, replace=False)
    copies = flip_exactly(stored[originals], real_like_distances(rng, 2000, 64), rng)
    index = ClusterIndex.build(stored, np.arange(len(stored)), stored[:1], np.zeros(len(stored), np.int64))
    found = index.search(copies, 64, mode="mih", substring_bits=16, probe_radius=1)
    recall = np.mean([original in set(m.ids.tolist()) for original, m in zip(originals, found)])
    assert recall >= 0.98
    assert all((m.distances <= 64).all() for m in found)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), t=st.integers(0, 80), bits=st.sampled_from([8, 16]),
       radius=st.sampled_from([0, 1]))
def test_mih_join_pairs_are_within_t(seed, n, t, bits, radius):
    rng = np.random.default_rng(seed)
    fingerprints, _ = fingerprint_set(rng, n, 5, clustered=True)
    forms = np.concatenate([fingerprints[:, None], flip_bits(np.repeat(fingerprints[:, None], 7, 1), 0.2, rng)], 1)
    distances = np.minimum(dihedral_hamming(forms, fingerprints), dihedral_hamming(forms, fingerprints).T)
    for position in range(256 // bits):
        pairs = substring_pairs(fingerprints, forms, position, bits, radius, t)
        assert (pairs[:, 0] < pairs[:, 1]).all()
        assert (distances[pairs[:, 0], pairs[:, 1]] <= t).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), t=st.integers(0, 63))
def test_mih_join_groups_equal_exact_where_the_bound_covers_t(seed, n, t):
    # Every form probes at radius 1: with 32 substrings, 63 bits.
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, 5, clustered=True)
    forms = np.concatenate([fingerprints[:, None], flip_bits(np.repeat(fingerprints[:, None], 7, 1), 0.05, rng)], 1)
    labels = nearest_labels(fingerprints, centres)
    radii = ClusterIndex.build(fingerprints, np.arange(n), centres, labels).radii
    exact = near_duplicate_components(fingerprints, labels, centres, radii, t, forms)
    mih = near_duplicate_components(fingerprints, labels, centres, radii, t, forms, mode="mih", substring_bits=8)
    assert np.array_equal(mih, exact)


def test_unsupported_substring_widths_and_radii_are_refused():
    fingerprints = np.zeros((4, NBYTES), np.uint8)
    index = ClusterIndex.build(fingerprints, np.arange(4), fingerprints[:1], np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="substring width"):
        index.search(fingerprints, 4, mode="mih", substring_bits=30)
    with pytest.raises(ValueError, match="probe radius"):
        index.search(fingerprints, 4, mode="mih", probe_radius=3)
