"""pipeline/dedup.py: one canonical per group chosen by the rule, pointers with their distances, exact copies linked."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.dedup import NONE, class_radii, dedup_decisions, exact_duplicate_pairs, plan_pointers, re_pointed
from imgdedup.pipeline.index.join import connected_components
from imgdedup.pipeline.keep import choose_canonicals, keep_rank


@st.composite
def groups_of_images(draw):
    n = draw(st.integers(1, 40))
    groups = np.array(draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    pixels = np.array(draw(st.lists(st.sampled_from([100, 400, 900]), min_size=n, max_size=n)))
    order = np.array(draw(st.permutations(range(n))))
    fixed = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return groups, pixels, order, fixed


@settings(max_examples=200, deadline=None)
@given(groups_of_images())
def test_canonical_follows_the_rule(case):
    groups, pixels, order, fixed = case
    rank = keep_rank("largest", pixels=pixels[np.argsort(order)], lossless=None, jpeg_quality=None,
                     file_bytes=None, exif=None)[np.argsort(np.argsort(order))]
    canonical = choose_canonicals(groups, rank, fixed)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        candidates = members[fixed[members]] if fixed[members].any() else members
        best = max(candidates, key=lambda i: (pixels[i], -order[i]))
        for i in members:
            assert canonical[i] == (i if fixed[i] else best)


def test_canonical_examples():
    # Group 0: new images only, the largest wins; group 1: the committed image wins over a larger new one.
    canonical = choose_canonicals(groups=[0, 0, 0, 1, 1], rank=[4, 1, 0, 2, 3],
                                  fixed=[False, False, False, False, True])
    assert canonical.tolist() == [2, 2, 2, 4, 4]
    assert choose_canonicals([], [], []).shape == (0,)


def _facts(**changed):
    """Four same-size copies: JPEG q=50, JPEG q=90, lossless PNG, JPEG q=90 with EXIF; then ``changed``."""
    facts = {"pixels": [100, 100, 100, 100], "lossless": [False, False, True, False],
             "jpeg_quality": [50, 90, 0, 90], "file_bytes": [20, 60, 300, 60], "exif": [False, False, False, True]}
    return {name: np.array(changed.get(name, values)) for name, values in facts.items()}


def test_best_keeps_more_pixels_then_lossless_then_jpeg_quality_then_exif_then_earliest():
    assert keep_rank("best", **_facts()).tolist() == [3, 2, 0, 1]
    assert keep_rank("best", **_facts(pixels=[100, 100, 99, 100])).tolist() == [2, 1, 3, 0]
    assert keep_rank("best", **_facts(pixels=[400, 100, 100, 100])).tolist()[0] == 0
    # Same quality and EXIF: the earlier copy first.
    assert keep_rank("best", **_facts(exif=[False] * 4)).tolist() == [3, 1, 0, 2]
    # Lossy without a JPEG quality (WebP): more bytes per pixel first.
    assert keep_rank("best", **_facts(jpeg_quality=[0, 0, 0, 0], lossless=[False] * 4,
                                      file_bytes=[10, 30, 20, 40], exif=[False] * 4)).tolist() == [3, 1, 2, 0]


def test_largest_and_earliest_ignore_the_encoding():
    assert keep_rank("largest", **_facts(pixels=[100, 200, 200, 50])).tolist() == [2, 0, 1, 3]
    assert keep_rank("earliest", **_facts()).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="dedup.keep"):
        keep_rank("newest", **_facts())


def test_pointers_carry_their_distance_to_the_canonical():
    fingerprints = np.array([[0b0000_0000], [0b0000_0111], [0b1111_1111]], np.uint8)
    plan = plan_pointers(np.array([0, 0, 2]), fingerprints)
    assert plan.duplicate_of.tolist() == [NONE, 0, NONE]
    assert plan.distance.tolist() == [NONE, 3, NONE]
    assert plan.is_pointer.tolist() == [False, True, False]


def test_pointer_distance_is_the_smallest_over_its_dihedral_forms():
    fingerprints = np.array([[0x00, 0x00], [0xFF, 0xFF]], np.uint8)
    forms = np.repeat(fingerprints[:, None, :], 8, axis=1)
    forms[1, 5] = [0x01, 0x00]  # one turned form of image 1 is 1 bit from image 0
    assert plan_pointers(np.array([0, 0]), fingerprints, forms).distance.tolist() == [NONE, 1]
    assert plan_pointers(np.array([0, 0]), fingerprints).distance.tolist() == [NONE, 16]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=30))
def test_exact_pairs_group_exactly_the_equal_digests(values):
    digests = np.array([[v, 7] for v in values], np.uint8).reshape(-1, 2)
    pairs = exact_duplicate_pairs(digests)
    assert len(pairs) == len(values) - len(set(values))
    labels = connected_components(len(values), pairs)
    for i in range(len(values)):
        for j in range(len(values)):
            assert (labels[i] == labels[j]) == (values[i] == values[j])


def _flip(row: np.ndarray, bits: int, start: int = 0) -> np.ndarray:
    """``row`` with bits ``start .. start + bits - 1`` flipped."""
    flipped = np.unpackbits(row).copy()
    flipped[start:start + bits] ^= 1
    return np.packbits(flipped)


def test_dedup_decisions_apply_the_whole_rule():
    rng = np.random.default_rng(3)
    base, other, lowq = rng.integers(0, 256, size=(3, 32), dtype=np.uint8)
    fingerprints = np.stack([
        base,            # 0: stored canonical (fixed)
        _flip(base, 5),  # 1: near duplicate of 0, new
        other,           # 2: new, bigger than its copy
        other,           # 3: byte-identical copy of 2, smaller
        _flip(base, 3),  # 4: near 0 but quality too low: stays canonical
        lowq,            # 5: unrelated
    ])
    digests = np.zeros((6, 32), np.uint8)
    digests[[0, 1, 2, 3, 4, 5], 0] = [1, 2, 3, 3, 4, 5]
    quality = np.array([90, 90, 90, 90, 5, 90])
    pixels = np.array([100, 400, 900, 100, 100, 100])
    fixed = np.array([True, False, False, False, False, False])
    centres = fingerprints[[0, 2]]
    labels = np.array([0, 0, 1, 1, 0, 1])
    to_centre = np.bitwise_count(fingerprints ^ centres[labels]).sum(axis=1)
    rank = keep_rank("largest", pixels=pixels, lossless=None, jpeg_quality=None, file_bytes=None, exif=None)
    decided = dedup_decisions(fingerprints, None, labels, to_centre, centres, quality, digests, rank, fixed,
                              threshold_t=16, min_quality=20, batch=64, threads=1)
    assert decided.plan.duplicate_of.tolist() == [NONE, 0, NONE, 2, NONE, NONE]
    assert decided.plan.distance.tolist() == [NONE, 5, NONE, 0, NONE, NONE]
    assert decided.exact.tolist() == [False, False, False, True, False, False]
    assert (decided.near_links, decided.exact_pairs) == (2, 1)  # 1 to 0, 3 to 2 (equal fingerprints too)
    # Class sizes and radii count the canonicals only (row 4 is 3 bits out, row 5 far from centre 1).
    assert decided.sizes.tolist() == [2, 2]
    assert decided.radii.tolist() == [3, int(to_centre[5])]


def _decided_in_one_class(fingerprints: np.ndarray):
    """:func:`dedup_decisions` at t = 64 over new images of distinct bytes in one class, kept in row order."""
    n = len(fingerprints)
    digests = np.arange(n, dtype=np.uint8)[:, None].repeat(32, axis=1) + 1
    centres = fingerprints[[1]]
    to_centre = np.bitwise_count(fingerprints ^ centres[0]).sum(axis=1)
    return dedup_decisions(fingerprints, None, np.zeros(n, np.int64), to_centre, centres, np.full(n, 90), digests,
                           np.arange(n), np.zeros(n, bool), threshold_t=64, min_quality=20)


def test_a_chain_of_near_pairs_is_split_into_stars_within_t():
    # a - b - c: each link 40 bits, a to c 80 bits. Components would make one group
    # with c 80 bits from its canonical a; stars keep a-b and leave c out, listed for review.
    a = np.zeros(32, np.uint8)
    b = _flip(a, 40)
    c = _flip(b, 40, start=40)
    fingerprints = np.stack([a, b, c])
    assert np.bitwise_count(fingerprints[0] ^ fingerprints[2]).sum() == 80
    decided = _decided_in_one_class(fingerprints)
    assert decided.plan.duplicate_of.tolist() == [NONE, 0, NONE]
    assert decided.plan.distance.tolist() == [NONE, 40, NONE]
    assert decided.review.tolist() == [2]


def test_a_split_member_joins_another_within_t_not_its_chain():
    # b is near a (the canonical) and near c; c is far from a but near d: c and d form their own star.
    a = np.zeros(32, np.uint8)
    b = _flip(a, 30)
    c = _flip(b, 40, start=30)   # 70 from a
    d = _flip(c, 10, start=70)   # 80 from a, 10 from c
    decided = _decided_in_one_class(np.stack([a, b, c, d]))
    assert decided.plan.duplicate_of.tolist() == [NONE, 0, NONE, 2]
    assert (decided.plan.distance[decided.plan.is_pointer] <= 64).all()
    assert decided.review.tolist() == [2, 3]


def test_class_radii_is_the_largest_member_distance():
    assert class_radii(np.array([0, 0, 2]), np.array([4, 9, 1]), 4).tolist() == [9, 0, 1, 0]


def test_re_pointing_swaps_the_canonical_and_keeps_groups_stars():
    fingerprints = np.array([[0x00], [0x03], [0x0F], [0xF0], [0x01]], np.uint8)
    # Committed: 0 canonical, 1 and 2 point to it; 3 canonical of its own. New image 4 wins group 0.
    current, distance = np.array([0, 0, 0, 3]), np.array([0, 2, 4, 0])
    plan = re_pointed(current, distance, np.array([4, 0, 0, 3]), fingerprints)
    assert plan.duplicate_of.tolist() == [4, 4, 4, NONE]
    # 0 -> 4: 1 bit; 1 -> 4: plain 1 bit; 2 -> 4: plain 3 bits (bound 4 + 1).
    assert plan.distance.tolist() == [1, 1, 3, NONE]
    # A committed pointer promoted: its old distance bounds the demoted canonical's.
    plan = re_pointed(current, np.array([0, 1, 4, 0]), np.array([1, 0, 0, 3]), fingerprints)
    assert plan.duplicate_of.tolist() == [1, NONE, 1, NONE]
    assert plan.distance.tolist() == [1, NONE, 2, NONE]
    # Nothing re-elected: nothing changes.
    plan = re_pointed(current, distance, np.array([0, 0, 0, 3]), fingerprints)
    assert plan.duplicate_of.tolist() == [NONE, 0, 0, NONE] and plan.distance.tolist() == [NONE, 2, 4, NONE]
