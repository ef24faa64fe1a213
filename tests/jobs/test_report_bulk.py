"""imgdedup report over a store the real bulk job wrote: counts, groups, thumbnails, and unmerge then get."""
from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from imgdedup.jobs import report_tables as rt
from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs.cli import main
from imgdedup.jobs.report import write_report
from imgdedup.jobs.unmerge import unmerge
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store, schemas
from tests.jobs.bulk_sets import groups_by_name, labelled_set, write_files

OVERRIDES = ["dask.partition_size=6", "dedup.clusters=2"]


@pytest.fixture(scope="module")
def bulk_store(tmp_path_factory, test_data):
    root = tmp_path_factory.mktemp("bulk")
    labelled = labelled_set(test_data / "dev", 3)
    write_files(str(root / "src"), {name: data for name, (data, _) in labelled.items()})
    key = GroupKey.generate()
    config = load_config(overrides=OVERRIDES)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        summary = run_bulk(str(root / "src"), str(root / "store"), key, config, client=client)
    return Store(str(root / "store")), key, config, summary, {name: data for name, (data, _) in labelled.items()}, \
        str(root / "src")


def test_report_of_a_bulk_run_agrees_with_its_tables_and_shows_every_group_member(bulk_store, tmp_path):
    store, key, config, summary, files, source = bulk_store
    headline = write_report(store, tmp_path, config, key=key)
    fingerprints = store.read_table(schemas.FINGERPRINTS)
    duplicates = sum(d is not None for d in fingerprints.column("duplicate_of").to_pylist())
    assert (headline["images"], headline["duplicates"]) == (fingerprints.num_rows, duplicates)
    assert (headline["images"], headline["duplicates"]) == (summary["images"], summary["duplicates"])
    assert headline["run_id"] is None and headline["runs"] == len(store.committed_runs()) == 1

    found = {frozenset(g) for g in groups_by_name(store, source) if len(g) > 1}
    members: dict[str, set[str]] = {}
    for row in pq.read_table(tmp_path / f"{rt.GROUPS}.parquet").to_pylist():
        members.setdefault(row["group_id"], set()).add(row["source"].split(source + "/", 1)[-1])
    assert {frozenset(m) for m in members.values()} == found and found

    stages = {row["stage"] for row in pq.read_table(tmp_path / f"{rt.TIMINGS}.parquet").to_pylist()}
    assert {"fingerprint", "dedup"} <= stages
    page = (tmp_path / "report.html").read_text()
    shown = min(config.report.members_shown, max(len(m) for m in members.values()))
    assert len(re.findall(r'<img class="thumb"', page)) >= shown


def test_unmerge_in_a_bulk_store_then_get_returns_the_member_itself(bulk_store, tmp_path):
    store, key, config, _, files, source = bulk_store
    rows = store.read_table(schemas.FINGERPRINTS).to_pylist()
    pointer = next(r for r in rows if r["duplicate_of"] is not None and store.blob_exists(r["image_id"]))
    unmerge(store, key, pointer["duplicate_of"], pointer["image_id"])
    key_file = write_key_file(tmp_path / "group.key", key)
    out = tmp_path / "member.img"
    assert main(["get", pointer["image_id"], "--out", str(out), "--store", store.url, "--key", str(key_file)]) == 0
    assert out.read_bytes() == files[pointer["source"].split(source + "/", 1)[-1]]


def test_sealed_store_nearest_distances_need_the_key_except_for_pointers(tmp_path, test_data):
    labelled = labelled_set(test_data / "dev", 2)
    write_files(str(tmp_path / "src"), {name: data for name, (data, _) in labelled.items()})
    key = GroupKey.generate()
    config = load_config(overrides=[*OVERRIDES, "crypto.mode=sealed"])
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        run_bulk(str(tmp_path / "src"), str(tmp_path / "store"), key, config, client=client)
    store = Store(str(tmp_path / "store"))
    assert schemas.schema_metadata(store.read_table(schemas.FINGERPRINTS).schema)["fingerprint_mode"] == "sealed"

    write_report(store, tmp_path / "plain", config)
    blind = pq.read_table(tmp_path / "plain" / f"{rt.NEAREST}.parquet").to_pylist()
    pointers = {r["image_id"] for r in store.read_table(schemas.FINGERPRINTS).to_pylist() if r["duplicate_of"]}
    assert pointers and {r["image_id"] for r in blind if r["distance"] is not None} == pointers

    write_report(store, tmp_path / "keyed", config, key=key)
    seen = pq.read_table(tmp_path / "keyed" / f"{rt.NEAREST}.parquet").to_pylist()
    by_class: dict[int, int] = {}
    for r in seen:
        by_class[r["cluster_id"]] = by_class.get(r["cluster_id"], 0) + 1
    assert all(r["distance"] is not None for r in seen if by_class[r["cluster_id"]] > 1)
    assert all(r["distance"] <= b["distance"] for r, b in zip(seen, blind) if b["distance"] is not None)
