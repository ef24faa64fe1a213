"""Report table builders: invariants over generated fingerprints tables."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.jobs import report_tables as rt
from imgdedup.pipeline.hashing.bits import hamming
from imgdedup.pipeline.store import schemas


@st.composite
def pointer_tables(draw):
    """A fingerprints table whose pointers point at earlier rows (canonical or not: chains happen)."""
    n = draw(st.integers(1, 30))
    ids = [f"{i:032x}" for i in range(n)]
    duplicate_of, distance = [], []
    for i in range(n):
        target = draw(st.one_of(st.none(), st.integers(0, i - 1))) if i else None
        duplicate_of.append(None if target is None else ids[target])
        distance.append(None if target is None else draw(st.integers(0, 80)))
    sizes = draw(st.lists(st.one_of(st.none(), st.integers(0, 10**6)), min_size=n, max_size=n))
    table = pa.table({
        "image_id": ids, "fingerprint": [bytes(32)] * n, "algo": ["lbph"] * n, "key_id": [""] * n,
        "cluster_id": draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
        "width": [640] * n, "height": [480] * n, "bytes": sizes, "duplicate_of": duplicate_of, "distance": distance,
        "source": [f"s/{i}.jpg" for i in range(n)],
    })
    return table.cast(pa.schema([schemas.fingerprints_schema().field(c) for c in table.column_names]))


@settings(max_examples=60, deadline=None)
@given(pointer_tables(), st.integers(1, 30))
def test_counts_add_up_over_parts_and_groups_partition_the_merged_rows(table, cut):
    cut = min(cut, table.num_rows)
    whole = rt.fingerprint_counts(table)
    parts = [rt.fingerprint_counts(table.slice(0, cut)), rt.fingerprint_counts(table.slice(cut))]
    assert whole == {k: parts[0][k] + parts[1][k] for k in whole}
    assert whole["images"] == whole["stored"] + whole["duplicates"]

    groups = rt.groups_table(table, threshold_t=64, review_margin=8).to_pylist()
    pointers = {r["image_id"] for r in table.to_pylist() if r["duplicate_of"] is not None}
    members = [g["image_id"] for g in groups]
    assert len(members) == len(set(members))  # every image in at most one group
    assert {g["image_id"] for g in groups if not g["is_canonical"]} == pointers
    canonical = {g["group_id"] for g in groups}
    assert all(table.to_pylist()[int(c, 16)]["duplicate_of"] is None for c in canonical)
    for g in groups:
        assert g["review"] == (g["spread"] >= 56)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_nearest_in_class_is_the_brute_force_nearest_within_each_class(n, k, seed):
    rng = np.random.default_rng(seed)
    fps = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    classes = rng.integers(0, k, size=n)
    neighbour, distance = rt.nearest_in_class(fps, classes)
    d = hamming(fps, fps)
    for i in range(n):
        others = np.flatnonzero((classes == classes[i]) & (np.arange(n) != i))
        if len(others) == 0:
            assert neighbour[i] == -1 and distance[i] == -1
        else:
            assert distance[i] == d[i, others].min() == d[i, neighbour[i]]
            assert classes[neighbour[i]] == classes[i] and neighbour[i] != i


def test_nearest_in_class_gives_the_same_answer_in_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    fps = rng.integers(0, 256, size=(300, 32), dtype=np.uint8)
    classes = rng.integers(0, 3, size=300)
    whole = rt.nearest_in_class(fps, classes)
    monkeypatch.setattr(rt, "NEAREST_BLOCK_CELLS", 250)  # blocks of 2 or 3 queries
    blocked = rt.nearest_in_class(fps, classes)
    assert np.array_equal(whole[1], blocked[1])
    assert np.array_equal(hamming(fps, fps)[np.arange(300), blocked[0]], blocked[1])
