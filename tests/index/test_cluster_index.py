"""ClusterIndex: exact search equals brute force; paper mode; updates; storage."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.hashing.bits import dihedral_hamming, hamming
from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.index import ClusterIndex, kernels
from tests.index.data import NBYTES, fingerprint_set, flip_bits, nearest_labels


def ids_of(n: int) -> list[str]:
    return [f"img{i}" for i in range(n)]


def as_positions(matches) -> list[set[int]]:
    return [{int(i[3:]) for i in m.ids} for m in matches]


def brute_force(distances: np.ndarray, t: int) -> list[set[int]]:
    return [set(np.flatnonzero(row <= t).tolist()) for row in distances]


def queries_near(fingerprints: np.ndarray, rng: np.random.Generator, m: int) -> np.ndarray:
    """Half copies and near copies of stored rows, half fresh random rows."""
    fresh = rng.integers(0, 256, (m - m // 2, NBYTES), dtype=np.uint8)
    if len(fingerprints) == 0:
        return np.concatenate([fresh, rng.integers(0, 256, (m // 2, NBYTES), dtype=np.uint8)])
    picked = fingerprints[rng.integers(0, len(fingerprints), m // 2)]
    return np.concatenate([flip_bits(picked, rng.uniform(0, 0.2), rng), fresh])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), k=st.integers(1, 24),
       t=st.integers(0, 64), clustered=st.booleans(), nearest=st.booleans())
def test_exact_search_equals_brute_force(seed, n, k, t, clustered, nearest):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, k, clustered)
    # Exactness must not depend on members being assigned to their nearest centre.
    labels = nearest_labels(fingerprints, centres) if nearest else rng.integers(0, k, n)
    index = ClusterIndex.build(fingerprints, ids_of(n), centres, labels)
    queries = queries_near(fingerprints, rng, 12)
    found = index.search(queries, t, batch=5)
    assert as_positions(found) == brute_force(hamming(queries, fingerprints), t)
    for matches in found:
        assert matches.distances.dtype == np.int32
        assert np.all(np.diff(matches.distances) >= 0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200), k=st.integers(1, 12), t=st.integers(0, 64))
def test_dihedral_queries_match_when_any_form_is_within_t(seed, n, k, t):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, k, clustered=True)
    index = ClusterIndex.build(fingerprints, ids_of(n), centres, nearest_labels(fingerprints, centres))
    # Each query's 8 forms: unrelated rows with one near copy of a stored row in a random slot.
    forms = rng.integers(0, 256, (6, 8, NBYTES), dtype=np.uint8)
    slots = rng.integers(0, 8, 6)
    forms[np.arange(6), slots] = flip_bits(fingerprints[rng.integers(0, n, 6)], 0.1, rng)
    found = index.search(forms, t)
    distances = dihedral_hamming(forms, fingerprints)
    assert as_positions(found) == brute_force(distances, t)
    for q, matches in enumerate(found):
        positions = [int(i[3:]) for i in matches.ids]
        assert np.array_equal(matches.distances, distances[q, positions])


def test_search_reports_distances_nearest_first():
    rng = np.random.default_rng(1)
    fingerprints, centres = fingerprint_set(rng, 400, 8, clustered=True)
    index = ClusterIndex.build(fingerprints, ids_of(400), centres, nearest_labels(fingerprints, centres))
    (matches,) = index.search(fingerprints[:1], 40)
    positions = [int(i[3:]) for i in matches.ids]
    assert positions[0] == 0 and matches.distances[0] == 0
    assert np.array_equal(matches.distances, hamming(fingerprints[:1], fingerprints[positions])[0])
    assert np.all(np.diff(matches.distances) >= 0)


def test_route_gives_distance_to_every_centre_smallest_over_forms():
    rng = np.random.default_rng(2)
    fingerprints, centres = fingerprint_set(rng, 50, 5, clustered=True)
    index = ClusterIndex.build(fingerprints, ids_of(50), centres, nearest_labels(fingerprints, centres))
    assert np.array_equal(index.route(fingerprints[:7]), hamming(fingerprints[:7], centres))
    forms = rng.integers(0, 256, (3, 8, NBYTES), dtype=np.uint8)
    assert np.array_equal(index.route(forms), dihedral_hamming(forms, centres))


def test_radius_is_largest_member_distance_and_empty_classes_stay_empty():
    rng = np.random.default_rng(3)
    fingerprints, centres = fingerprint_set(rng, 30, 40, clustered=True)  # k > n: empty classes
    labels = nearest_labels(fingerprints, centres)
    index = ClusterIndex.build(fingerprints, ids_of(30), centres, labels)
    distance = hamming(fingerprints, centres)[np.arange(30), labels]
    for c in range(40):
        members = labels == c
        assert index.sizes[c] == members.sum()
        assert index.radii[c] == (distance[members].max() if members.any() else 0)
    assert as_positions(index.search(fingerprints, 0)) == brute_force(hamming(fingerprints, fingerprints), 0)


def test_one_element_classes():
    rng = np.random.default_rng(4)
    fingerprints = rng.integers(0, 256, (20, NBYTES), dtype=np.uint8)
    index = ClusterIndex.build(fingerprints, ids_of(20), fingerprints, np.arange(20))
    assert np.all(index.radii == 0) and np.all(index.sizes == 1)
    queries = flip_bits(fingerprints, 0.1, rng)
    for mode in ("exact", "paper"):
        assert as_positions(index.search(queries, 64, mode=mode)) == brute_force(hamming(queries, fingerprints), 64)


def test_identical_fingerprints_are_all_returned_at_distance_zero():
    row = np.random.default_rng(5).integers(0, 256, (1, NBYTES), dtype=np.uint8)
    fingerprints = np.repeat(row, 9, axis=0)
    index = ClusterIndex.build(fingerprints, ids_of(9), row, np.zeros(9, int))
    (matches,) = index.search(row, 0)
    assert sorted(matches.ids) == ids_of(9) and not matches.distances.any()
    assert index.radii[0] == 0


def test_empty_index_finds_nothing_and_first_add_opens_class_zero():
    index = ClusterIndex.empty(NBYTES)
    query = np.random.default_rng(6).integers(0, 256, (2, NBYTES), dtype=np.uint8)
    assert index.route(query).shape == (2, 0)
    for mode in ("exact", "paper"):
        assert [len(m.ids) for m in index.search(query, 64, mode=mode)] == [0, 0]
    assert index.add(query[0], "first", centre_threshold=96) == (0, True)
    (matches, _) = index.search(query, 0)
    assert list(matches.ids) == ["first"]
    assert index.drift().new_classes == 1 and len(index) == 1


def test_paper_mode_searches_the_nearest_class_only_within_n():
    rng = np.random.default_rng(7)
    centres = rng.integers(0, 256, (2, NBYTES), dtype=np.uint8)
    # A query between two classes: its duplicate sits in the class that is not nearest.
    query = centres[0].copy()
    duplicate = flip_bits(query[None], 0.0, rng)[0]
    bits = np.unpackbits(duplicate)
    differing = np.flatnonzero(np.unpackbits(centres[0]) != np.unpackbits(centres[1]))
    bits[differing[: len(differing) // 2 + 8]] ^= 1  # nearer centre 1 than centre 0
    duplicate = np.packbits(bits)
    fingerprints = np.stack([centres[0], duplicate])
    labels = nearest_labels(fingerprints, centres)
    assert list(labels) == [0, 1]
    index = ClusterIndex.build(fingerprints, ids_of(2), centres, labels)
    t = int(hamming(query[None], duplicate[None])[0, 0])
    assert as_positions(index.search(query[None], t, mode="exact")) == [{0, 1}]
    assert as_positions(index.search(query[None], t, mode="paper")) == [{0}]
    far = np.bitwise_not(centres[0])[None]  # 256 bits from centre 0
    nearest_distance = int(index.route(far).min())
    assert as_positions(index.search(far, 256, mode="paper", centre_threshold=nearest_distance - 1)) == [set()]
    assert len(as_positions(index.search(far, 256, mode="paper", centre_threshold=nearest_distance))[0]) == 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.integers(0, 64))
def test_paper_mode_returns_brute_force_matches_of_the_nearest_class(seed, t):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, 150, 6, clustered=True)
    labels = nearest_labels(fingerprints, centres)
    index = ClusterIndex.build(fingerprints, ids_of(150), centres, labels)
    queries = queries_near(fingerprints, rng, 10)
    nearest = hamming(queries, centres).argmin(axis=1)
    in_class = (labels[None, :] == nearest[:, None]) & (hamming(queries, fingerprints) <= t)
    assert as_positions(index.search(queries, t, mode="paper")) == [set(np.flatnonzero(r).tolist()) for r in in_class]
    # Dihedral queries: the nearest class of each form is searched.
    forms = np.stack([queries, rng.permutation(queries), flip_bits(queries, 0.3, rng)], axis=1)
    nearest = np.stack([hamming(forms[:, f], centres).argmin(axis=1) for f in range(3)], axis=1)
    searched = (labels[None, None, :] == nearest[:, :, None]).any(axis=1)
    in_class = searched & (dihedral_hamming(forms, fingerprints) <= t)
    assert as_positions(index.search(forms, t, mode="paper")) == [set(np.flatnonzero(r).tolist()) for r in in_class]


@pytest.mark.parametrize("tail_min", [16, 1024])
def test_add_updates_centre_radius_and_opens_classes_beyond_n(monkeypatch, tail_min):
    # 16: the adds cross several re-layouts; 1024: every add stays in the tail
    # while the centres the layout was measured against move.
    monkeypatch.setattr(ClusterIndex, "_TAIL_MIN", tail_min)
    rng = np.random.default_rng(8)
    fingerprints, centres = fingerprint_set(rng, 200, 4, clustered=True)
    labels = nearest_labels(fingerprints, centres)
    index = ClusterIndex.build(fingerprints[:100], ids_of(100), centres, labels[:100])
    stored = [fingerprints[:100]]
    for i in range(100, 200):
        nearest = int(hamming(fingerprints[i:i + 1], index.centres).argmin())
        assert index.add(fingerprints[i], f"img{i}", centre_threshold=96) == (nearest, False)
        stored.append(fingerprints[i:i + 1])
    stranger = np.bitwise_not(index.centres[0])
    assert int(index.route(stranger[None]).min()) > 96
    cluster, opened = index.add(stranger, "stranger", centre_threshold=96)
    assert opened and cluster == 4
    all_fps = np.concatenate(stored + [stranger[None]])
    ids, member_fps, member_labels = index.members()
    # Centres are the bitwise majority of the members (a tie may keep either bit),
    # radii their largest distance.
    for c in range(5):
        rows = member_fps[member_labels == c]
        counts = np.unpackbits(rows, axis=1).sum(axis=0)
        decided = 2 * counts != len(rows)
        assert np.array_equal(np.unpackbits(index.centres[c])[decided], (2 * counts > len(rows))[decided])
        assert index.radii[c] == hamming(index.centres[c:c + 1], rows).max()
        assert index.sizes[c] == len(rows)
    drift = index.drift()
    assert drift.new_classes == 1 and drift.added == 101
    assert np.array_equal(drift.centre_shift, np.diagonal(hamming(centres, index.centres[:4])))
    queries = queries_near(all_fps, rng, 20)
    order = list(range(200)) + ["stranger"]
    for t in (0, 24, 48, 64):
        found = [{("stranger" if i == "stranger" else int(i[3:])) for i in m.ids} for m in index.search(queries, t)]
        assert found == [{order[j] for j in row} for row in brute_force(hamming(queries, all_fps), t)]
    # Paper mode: every member of the nearest current class, laid out or added since.
    nearest = hamming(queries, index.centres).argmin(axis=1)
    within = (member_labels[None, :] == nearest[:, None]) & (hamming(queries, member_fps) <= 64)
    assert [set(ids[row]) for row in within] == [set(m.ids) for m in index.search(queries, 64, mode="paper")]


def test_cluster_columns_round_trip():
    rng = np.random.default_rng(9)
    fingerprints, centres = fingerprint_set(rng, 120, 6, clustered=True)
    labels = nearest_labels(fingerprints, centres)
    index = ClusterIndex.build(fingerprints, ids_of(120), centres, labels)
    columns = index.to_cluster_columns()
    assert columns["radius"].dtype == np.int16 and len(columns["centroid"][0]) == NBYTES
    shuffled = rng.permutation(6)
    stored = {"cluster_id": columns["cluster_id"][shuffled], "centroid": [columns["centroid"][i] for i in shuffled]}
    again = ClusterIndex.from_cluster_columns(stored, fingerprints, ids_of(120), labels)
    assert np.array_equal(again.centres, index.centres) and np.array_equal(again.radii, index.radii)
    queries = queries_near(fingerprints, rng, 10)
    assert as_positions(again.search(queries, 30)) == as_positions(index.search(queries, 30))


def test_bad_inputs_are_refused():
    rng = np.random.default_rng(10)
    fingerprints, centres = fingerprint_set(rng, 10, 2, clustered=False)
    with pytest.raises(ValueError):
        ClusterIndex.build(fingerprints, ids_of(10), centres, np.full(10, 2))
    index = ClusterIndex.build(fingerprints, ids_of(10), centres, np.zeros(10, int))
    with pytest.raises(ValueError):
        index.search(fingerprints, 8, mode="nearest")
    with pytest.raises(ValueError):
        index.search(fingerprints[:, :8], 8)


def test_exact_search_stays_exact_when_adds_move_a_centre_far():
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, NBYTES, dtype=np.uint8)
    bits = np.unpackbits(a)
    bits[:80] ^= 1
    b = np.packbits(bits)  # 80 bits from a: within N = 96, so b joins a's class
    laid_out = flip_bits(np.repeat(a[None], 3, axis=0), 0.01, rng)
    index = ClusterIndex.build(laid_out, ids_of(3), a[None], np.zeros(3, int))
    for i in range(10):
        assert index.add(b, f"img{3 + i}", centre_threshold=96) == (0, False)
    assert hamming(index.centres, b[None])[0, 0] == 0  # the majority moved onto b
    assert as_positions(index.search(laid_out, 0)) == [{0}, {1}, {2}]


def test_search_shared_among_threads_returns_the_same_matches_in_the_same_order(monkeypatch):
    rng = np.random.default_rng(11)
    seeds = rng.integers(0, 256, (20, 32), dtype=np.uint8)
    noise = (rng.random((2000, 256)) < 0.1).astype(np.uint8)
    fingerprints = seeds[rng.integers(0, 20, 2000)] ^ np.packbits(noise, axis=1)
    index = ClusterIndex.build(fingerprints, np.arange(2000), seeds[:8], assign(fingerprints, seeds[:8])[0])
    queries = fingerprints[:50]
    alone = index.search_flat(queries, 60)
    monkeypatch.setattr(kernels, "_ROWS_PER_THREAD", 1)
    for threads in (2, 3):
        shared = index.search_flat(queries, 60, threads=threads)
        for a, b in zip(alone, shared):
            assert np.array_equal(a, b)
