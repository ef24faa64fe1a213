"""Garbage collection: only files no commit refers to, only when older than the grace period."""
from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.jobs.cli import main as cli_main
from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import Store, object_paths
from imgdedup.pipeline.store.backend import write_atomic

from .test_store import error_rows


def present_keys(store) -> set[str]:
    return {p[len(store.root) + 1:] for p in store.fs.find(store.root)}


def test_gc_removes_unreferenced_files_only_after_the_grace_period(store):
    key_a = store.write_table_part("errors", "a", 0, error_rows("a", ["a/0", "a/1"]))
    store.write_blob("aaaa0001", b"ha", [b"body a"])
    store.commit("a", {"errors": [key_a]}, ["aaaa0001"])
    key_b = store.write_table_part("errors", "b", 0, error_rows("b", ["b/0"]))
    store.write_blob("bbbb0001", b"hb", [b"body b"])
    committed = present_keys(store) - {key_b, "blobs/bb/bb/bbbb0001", "blobs/bb/bb/bbbb0001.hdr"}
    now = time.time()

    assert store.gc(grace_seconds=3600, now=now) == []
    removed = store.gc(grace_seconds=3600, now=now + 7200)
    assert removed == sorted([key_b, "blobs/bb/bb/bbbb0001", "blobs/bb/bb/bbbb0001.hdr"])
    assert present_keys(store) == committed
    assert store.read_table("errors").column("source").to_pylist() == ["a/0", "a/1"]
    assert store.open_blob_body("aaaa0001").read() == b"body a"


FOREIGN_KEYS = [
    "notes.txt", "photos/2026/img_0001.jpg", "errors/readme.md", "errors/r1/part-0.parquet",
    "errors/r1/part-0-NOTHEX0123456789abcdef0123456789.parquet", "blobs/ab/cd/abcd0001.bak",
    "blobs/xx/yy/abcd0001", "blobs/abcd0001", "_commits/1.json", "_commits/00000000000000000001.json.bak",
]


def test_gc_removes_only_names_the_store_makes(store):
    """Files that merely share the store's folder survive gc, however old; the store's own leftovers go."""
    store.commit("first", {})  # a store (without a commit, a folder holding foreign files is not one: below)
    for key in FOREIGN_KEYS:
        write_atomic(store.fs, store._path(key), [b"not the store's"])
    leftovers = [
        store.write_table_part("errors", "r1", 0, error_rows("r1", ["x"])),
        store.write_run_file("reports", "r1", "report.html", b"<html>"),
        store.write_blob("abcd0002", b"h", [b"body"]),
        "blobs/ab/cd/abcd0002.hdr",
        "blobs/ab/cd/abcd0003" + object_paths.temporary_suffix(),
        "_commits/00000000000000000001.json" + object_paths.temporary_suffix(),
    ]
    for key in leftovers[-2:]:
        write_atomic(store.fs, store._path(key), [b"interrupted"])
    removed = store.gc(grace_seconds=0, now=time.time() + 10)
    assert removed == sorted(leftovers)
    assert present_keys(store) == set(FOREIGN_KEYS) | {object_paths.commit_key(1)}


def test_gc_refuses_a_folder_with_foreign_files_and_no_commit(store):
    for key in FOREIGN_KEYS:
        write_atomic(store.fs, store._path(key), [b"not the store's"])
    leftover = store.write_table_part("errors", "r1", 0, error_rows("r1", ["x"]))
    with pytest.raises(StoreError, match="not a store"):
        store.gc(grace_seconds=0, now=time.time() + 10)
    assert present_keys(store) == set(FOREIGN_KEYS) | {leftover}


def test_committing_files_gc_removed_fails_loudly(store):
    key = store.write_table_part("errors", "slow", 0, error_rows("slow", ["x"]))
    store.gc(grace_seconds=0, now=time.time() + 10)
    with pytest.raises(StoreError, match="not in the store"):
        store.commit("slow", {"errors": [key]})


def test_negative_grace_is_refused(store):
    with pytest.raises(StoreError):
        store.gc(grace_seconds=-1)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=6))
def test_gc_keeps_exactly_what_commits_refer_to(runs):
    """Any mix of committed and abandoned runs: after gc everything committed is there, nothing else."""
    store = Store(f"memory://gc-{time.monotonic_ns()}")
    for n, (commit, parts, blobs) in enumerate(runs):
        run_id = f"run-{n}"
        files = [store.write_table_part("errors", run_id, p, error_rows(run_id, [f"{run_id}/{p}"])) for p in range(parts)]
        blob_ids = [f"{n:04d}blob{b}" for b in range(blobs)]
        for blob_id in blob_ids:
            store.write_blob(blob_id, b"h", [blob_id.encode()])
        if commit:
            store.commit(run_id, {"errors": files}, blob_ids)
    expected_rows = store.read_table("errors").num_rows
    store.gc(grace_seconds=0, now=time.time() + 1)
    latest = store.latest_version()
    blob_keys = {k for b in store.iter_blob_ids() for k in (object_paths.blob_body_key(b), object_paths.blob_header_key(b))}
    expected = {object_paths.commit_key(v) for v in range(1, latest + 1)} | set(store.committed_files("errors")) | blob_keys
    assert present_keys(store) == expected
    assert store.read_table("errors").num_rows == expected_rows
    for blob_id in store.iter_blob_ids():
        assert store.open_blob_body(blob_id).read() == blob_id.encode()


def test_gc_command_uses_the_configured_store(tmp_path):
    url = str(tmp_path / "store")
    store = Store(url)
    leftover = store.write_table_part("errors", "abandoned", 0, error_rows("abandoned", ["x"]))
    assert cli_main(["--set", f"store.url={url!r}", "gc"]) == 0
    assert leftover in present_keys(store)  # younger than the default grace period
    assert cli_main(["--set", f"store.url={url!r}", "gc", "--grace", "0"]) == 0
    assert leftover not in present_keys(store)
