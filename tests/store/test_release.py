"""Releasing committed blobs: gone from the live set at once, removed by gc, never listed or written again."""
from __future__ import annotations

import time

import pytest

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import commitlog, object_paths

from .test_gc import present_keys


def blob_keys(blob_id: str) -> set[str]:
    return {object_paths.blob_body_key(blob_id), object_paths.blob_header_key(blob_id)}


@pytest.fixture
def released_store(store):
    """Version 1 lists three blobs; version 2 releases the first two and lists a fourth."""
    for blob_id in ("aaaa0001", "aaaa0002", "aaaa0003"):
        store.write_blob(blob_id, b"h", [blob_id.encode()])
    store.commit("r1", {}, ["aaaa0001", "aaaa0002", "aaaa0003"])
    store.write_blob("aaaa0004", b"h", [b"aaaa0004"])
    store.commit("r2", {}, ["aaaa0004"], release_blobs=["aaaa0001", "aaaa0002"])
    return store


def test_gc_removes_exactly_the_released_blobs(released_store):
    store = released_store
    before = present_keys(store)
    assert list(store.iter_blob_ids()) == ["aaaa0003", "aaaa0004"]
    assert store.released_blob_ids() == {"aaaa0001", "aaaa0002"}
    assert store.commit_record(2)["release"] == ["aaaa0001", "aaaa0002"]

    assert store.gc(grace_seconds=3600, now=time.time()) == []  # released but younger than the grace period
    removed = store.gc(grace_seconds=0, now=time.time() + 10)
    assert set(removed) == blob_keys("aaaa0001") | blob_keys("aaaa0002")
    assert present_keys(store) == before - set(removed)
    for blob_id in ("aaaa0003", "aaaa0004"):
        assert store.open_blob_body(blob_id).read() == blob_id.encode()
    assert list(store.iter_blob_ids(committed_only=False)) == ["aaaa0003", "aaaa0004"]


def test_a_released_blob_is_gone_for_good(released_store):
    store = released_store
    with pytest.raises(StoreError, match="released"):
        store.write_blob("aaaa0001", b"h", [b"again"])
    with pytest.raises(StoreError, match="released"):
        store.commit("r3", {}, ["aaaa0001"])
    assert not store.is_committed("r3")


def test_release_is_idempotent_per_run_and_checked(released_store):
    store = released_store
    assert store.commit("r2", {}, ["aaaa0004"], release_blobs=["aaaa0001", "aaaa0002"]) == 2
    assert store.latest_version() == 2
    with pytest.raises(StoreError, match="no commit lists"):
        store.commit("r3", {}, release_blobs=["bbbb0001"])
    store.write_blob("aaaa0005", b"h", [b"x"])
    with pytest.raises(StoreError, match="both list and release"):
        store.commit("r3", {}, ["aaaa0005"], release_blobs=["aaaa0005"])
    assert store.latest_version() == 2


def test_an_old_version_still_lists_a_released_blob_until_gc_removes_it(released_store):
    store = released_store
    assert "aaaa0001" in store.commit_record(1)["blobs"]
    assert store.open_blob_body("aaaa0001").read() == b"aaaa0001"
    store.gc(grace_seconds=0, now=time.time() + 10)
    with pytest.raises(StoreError, match="no such blob"):
        store.open_blob_body("aaaa0001")


def test_a_blob_listed_again_after_the_release_was_decided_is_kept(store, monkeypatch):
    """An unmerge that lists a pointer's blob again between a run's release check and its commit wins."""
    for blob_id in ("aaaa0001", "aaaa0002"):
        store.write_blob(blob_id, b"h", [blob_id.encode()])
    store.commit("r1", {}, ["aaaa0001", "aaaa0002"])
    decided_at = store.latest_version()
    # The concurrent commit lands while the releasing commit is between its checks and its record.
    real_append = commitlog.CommitLog.append

    def overtaken(log, *args, **kwargs):
        monkeypatch.setattr(commitlog.CommitLog, "append", real_append)
        store.commit("unmerge", {}, ["aaaa0001"])
        return real_append(log, *args, **kwargs)

    monkeypatch.setattr(commitlog.CommitLog, "append", overtaken)
    version = store.commit("r2", {}, release_blobs=["aaaa0001", "aaaa0002"], releases_read_at=decided_at)
    assert version == decided_at + 2
    assert store.commit_record(version)["release"] == ["aaaa0002"]
    assert store.released_blob_ids() == {"aaaa0002"}
    assert store.open_blob_body("aaaa0001").read() == b"aaaa0001"
