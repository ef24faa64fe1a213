"""The distributed join (Dask tasks, links merged on the client) forms the groups of the single-process one."""
from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster

from imgdedup.jobs.bulk_join import join_rows, position_pairs
from imgdedup.pipeline.config import IndexConfig
from imgdedup.pipeline.index import (ClusterIndex, near_duplicate_components, near_duplicate_groups, spanning_links,
                                     substring_pairs)
from imgdedup.pipeline.index.join import connected_components
from tests.index.data import NBYTES, fingerprint_set, flip_bits, nearest_labels


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


def dataset(seed: int, n: int):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, 40, clustered=True)
    forms = np.concatenate([fingerprints[:, None], flip_bits(np.repeat(fingerprints[:, None], 7, 1), 0.3, rng)], 1)
    forms[::7, 3] = flip_bits(fingerprints[::7], 0.02, rng)  # some rows match others only through a form
    fingerprints[n - 50:], forms[n - 50:] = fingerprints[:50], forms[:50]  # identical rows, one node in the join
    labels = nearest_labels(fingerprints, centres)
    radii = ClusterIndex.build(fingerprints, np.arange(n), centres, labels).radii
    return fingerprints, forms, centres, labels, radii


@pytest.mark.parametrize("bits, radius", [(16, 1), (11, 2), (8, 0)])
def test_position_pairs_from_partitions_equal_those_of_the_stacked_rows(bits, radius):
    # A position task stacks only the plain rows and probes one form of every row at a time.
    rng = np.random.default_rng(bits)
    n, t = 3000, 40
    forms = rng.integers(0, 256, (n, 8, NBYTES), dtype=np.uint8)
    originals, copies = rng.choice(n, (2, 600), replace=False)
    near = flip_bits(forms[originals, 0], 0.08, rng)
    forms[copies[:300], 0] = near[:300]  # near by the plain forms
    forms[copies[300:], rng.integers(1, 8, 300)] = near[300:]  # near only through another form
    fingerprints = np.ascontiguousarray(forms[:, 0])
    bounds = [0, 1, 700, 700, 1950, 2000, n]  # unequal partitions, one of one row, one empty
    partitions = [(fingerprints[a:b], forms[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    for position in range(256 // bits):
        expected = substring_pairs(fingerprints, forms, position, bits, radius, t)
        assert len(expected) > 0
        assert np.array_equal(position_pairs(position, bits, radius, t, *partitions), expected)


@pytest.mark.parametrize("mode", ["exact", "mih"])
@pytest.mark.parametrize("t", [12, 40])
def test_distributed_join_equals_single_process(client, monkeypatch, mode, t):
    # Small partitions, so the exact join has several tasks too.
    monkeypatch.setattr("imgdedup.jobs.bulk_join.ROWS_PER_PARTITION", 300)
    fingerprints, forms, centres, labels, radii = dataset(5, 2000)
    expected = near_duplicate_components(fingerprints, labels, centres, radii, t, forms, mode=mode)
    assert len(np.unique(expected)) < len(expected)  # the set has groups to find
    index = IndexConfig(mode=mode, substring_bits=16, probe_radius=1)
    assert np.array_equal(join_rows(client, fingerprints, forms, centres, t, index).labels, expected)


@pytest.mark.parametrize("mode", ["exact", "mih"])
def test_distributed_zone_pairs_equal_single_process(client, monkeypatch, mode):
    monkeypatch.setattr("imgdedup.jobs.bulk_join.ROWS_PER_PARTITION", 300)
    fingerprints, forms, centres, labels, radii = dataset(5, 2000)
    t, verify_t = 12, 40
    expected = near_duplicate_groups(fingerprints, labels, centres, radii, t, forms, verify_t=verify_t, mode=mode,
                                     substring_bits=16, probe_radius=1)
    index = IndexConfig(mode=mode, substring_bits=16, probe_radius=1)
    joined = join_rows(client, fingerprints, forms, centres, t, index, verify_t=verify_t)
    # the groups are those of the pairs within t alone; the zone holds pairs between groups
    assert np.array_equal(joined.labels, near_duplicate_components(fingerprints, labels, centres, radii, t, forms,
                                                                   mode=mode))
    assert len(expected.zone_pairs) > 10
    assert np.array_equal(joined.zone_pairs, expected.zone_pairs)
    assert np.array_equal(joined.zone_distances, expected.zone_distances)


@pytest.mark.parametrize("seed, mode", [(6, "auto"), (7, "mih")])
def test_resolved_configs_join_in_the_chosen_mode_and_mih_with_the_rule_plan_is_exact(client, seed, mode):
    fingerprints, forms, centres, labels, radii = dataset(seed, 600)
    resolved = IndexConfig(mode=mode).resolved(600, 30, join=True)
    assert resolved.mode == ("exact" if mode == "auto" else "mih")  # 600 rows: a scan costs less than any plan
    assert np.array_equal(join_rows(client, fingerprints, forms, centres, 30, resolved).labels,
                          near_duplicate_components(fingerprints, labels, centres, radii, 30, forms))


def test_no_rows_form_no_groups(client):
    empty = np.zeros((0, 32), np.uint8)
    assert len(join_rows(client, empty, None, empty, 10, IndexConfig(mode="mih")).labels) == 0


def test_spanning_links_keep_the_components():
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 300, (400, 2))
    links = spanning_links(pairs)
    assert len(links) <= len(np.unique(pairs))
    assert np.array_equal(connected_components(300, links), connected_components(300, pairs))
