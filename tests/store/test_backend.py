"""The two write primitives, on each backend and on a generic fsspec filesystem."""
from __future__ import annotations

import errno
import os

import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import Store, backend, commitlog
from imgdedup.pipeline.store import store as store_module
from imgdedup.pipeline.store.backend import OBJECT_PART_BYTES, list_keys, write_atomic, write_exclusive

from .conftest import new_location


@pytest.fixture(params=["local", "memory", "s3", "generic"])
def fs_and_root(request, tmp_path):
    """A backend's filesystem and a fresh root; "generic" is a DirFileSystem, which no branch knows."""
    if request.param == "generic":
        return DirFileSystem(str(tmp_path), LocalFileSystem(auto_mkdir=True)), "root"
    store = new_location(request.param, request, tmp_path).open()
    return store.fs, store.root


def test_exclusive_write_creates_once(fs_and_root):
    fs, root = fs_and_root
    path = f"{root}/_commits/00000000000000000001.json"
    assert write_exclusive(fs, path, b"first")
    assert not write_exclusive(fs, path, b"second")
    assert fs.cat_file(path) == b"first"
    assert list_keys(fs, root) == ["_commits/00000000000000000001.json"]


def test_atomic_write_replaces_whole_and_leaves_no_temporary(fs_and_root):
    fs, root = fs_and_root
    path = f"{root}/blobs/ab/cd/abcdef"
    write_atomic(fs, path, [b"old"])
    steps = []
    write_atomic(fs, path, [b"new ", b"value"], on_chunk=lambda: steps.append(fs.cat_file(path)))
    assert fs.cat_file(path) == b"new value"
    assert list_keys(fs, root) == ["blobs/ab/cd/abcdef"]
    if isinstance(fs, LocalFileSystem):
        assert steps == [b"old", b"old"]  # readers see the old object until the rename


@pytest.mark.parametrize("size", [10, OBJECT_PART_BYTES + 10])  # one PUT; a multipart upload on S3
def test_atomic_write_whose_chunks_fail_publishes_nothing(fs_and_root, size):
    fs, root = fs_and_root
    on_s3 = "s3" in fs.protocol
    if not (on_s3 or isinstance(fs, (LocalFileSystem, MemoryFileSystem))):
        pytest.skip("a generic backend writes in place (docs/store.md)")
    path = f"{root}/blobs/ab/cd/abcdef"
    write_atomic(fs, path, [b"old"])

    def failing_chunks():
        yield bytes(size)
        raise RuntimeError("encryption failed mid-blob")

    with pytest.raises(RuntimeError, match="mid-blob"):
        write_atomic(fs, path, failing_chunks())
    assert fs.cat_file(path) == b"old"
    assert list_keys(fs, root) == ["blobs/ab/cd/abcdef"]
    if on_s3:
        bucket = root.split("/", 1)[0]
        uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=root.split("/", 1)[1])
        assert uploads.get("Uploads", []) == []


def test_listing_leaves_no_cache_that_hides_later_writes(fs_and_root):
    """After a listing, a file another process writes into a listed folder is seen."""
    fs, root = fs_and_root
    write_atomic(fs, f"{root}/blobs/ab/cd/abcd0001", [b"one"])
    assert list_keys(fs, root) == ["blobs/ab/cd/abcd0001"]
    another_process = type(fs)(skip_instance_cache=True, **fs.storage_options) if "s3" in fs.protocol else fs
    write_atomic(another_process, f"{root}/blobs/ab/cd/abcd0002", [b"two"])
    assert fs.exists(f"{root}/blobs/ab/cd/abcd0002")
    assert fs.cat_file(f"{root}/blobs/ab/cd/abcd0002") == b"two"


def test_local_writes_make_new_folders_durable(tmp_path, monkeypatch):
    """Every folder a local write creates is recorded in its parent with an fsync (power-loss safety)."""
    synced = []
    monkeypatch.setattr(backend, "_fsync_path", synced.append)
    root = tmp_path / "store"
    write_atomic(LocalFileSystem(), f"{root}/errors/run-1/part-0.parquet", [b"x"])
    assert synced == [str(tmp_path), str(root), f"{root}/errors", f"{root}/errors/run-1"]
    synced.clear()
    assert write_exclusive(LocalFileSystem(), f"{root}/_commits/00000000000000000001.json", b"{}")
    assert synced == [str(root), f"{root}/_commits"]


def test_exclusive_write_retries_a_conflicting_concurrent_create(tmp_path, monkeypatch):
    """S3 may answer racing conditional PUTs with 409 (EBUSY in s3fs): retry, then win or find the key taken."""
    fs = DirFileSystem(str(tmp_path), LocalFileSystem(auto_mkdir=True))
    create = fs.pipe_file
    monkeypatch.setattr(backend, "CONFLICT_BACKOFF_SECONDS", 0.0)

    def conflict_first(path, data, **kwargs):
        if not conflicts:
            return create(path, data, **kwargs)
        conflicts.pop()()
        raise OSError(errno.EBUSY, "ConditionalRequestConflict")

    monkeypatch.setattr(fs, "pipe_file", conflict_first)
    conflicts = [lambda: None, lambda: None]
    assert write_exclusive(fs, "_commits/00000000000000000001.json", b"mine")
    assert fs.cat_file("_commits/00000000000000000001.json") == b"mine"
    conflicts = [lambda: create("_commits/00000000000000000002.json", b"theirs")]
    assert not write_exclusive(fs, "_commits/00000000000000000002.json", b"mine")
    assert fs.cat_file("_commits/00000000000000000002.json") == b"theirs"
    conflicts = [lambda: None] * backend.CONFLICT_ATTEMPTS
    with pytest.raises(OSError):
        write_exclusive(fs, "_commits/00000000000000000003.json", b"mine")


def test_writes_a_commit_publishes_leave_their_fsync_to_the_commit(tmp_path, monkeypatch):
    """Blobs and parts are not fsynced one by one; the commit flushes the filesystem before its record."""
    events = []
    real_flush = store_module.flush_filesystem
    monkeypatch.setattr(backend.os, "fsync", lambda fd: events.append("fsync"))
    monkeypatch.setattr(store_module, "flush_filesystem", lambda handle: events.append("flush") or real_flush(handle))
    real_exclusive = commitlog.write_exclusive
    monkeypatch.setattr(commitlog, "write_exclusive",
                        lambda *args: events.append("record") or real_exclusive(*args))
    store = Store(str(tmp_path / "store"))
    store.write_blob("a" * 32, b"header", [b"body"])
    assert events == []
    store.commit("run-1", {}, blobs=["a" * 32])
    assert events[:2] == ["flush", "record"] and "fsync" in events[2:]  # the record itself is fsynced


def test_a_store_whose_writes_another_host_commits_fsyncs_each_write(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(backend.os, "fsync", synced.append)
    Store(str(tmp_path / "store"), deferred_sync=False).write_blob("a" * 32, b"header", [b"body"])
    assert len(synced) == 2 + 2 + 4  # body and header, their folder, and the four new folders' parents


def test_a_deferred_write_never_replaces_a_file_with_unflushed_bytes(tmp_path, monkeypatch):
    """A second writer of a published blob fsyncs its bytes before they replace the first's."""
    path = tmp_path / "blob"
    write_atomic(LocalFileSystem(), str(path), [b"first"], durable=False)
    synced = []
    monkeypatch.setattr(backend.os, "fsync", synced.append)
    write_atomic(LocalFileSystem(), str(path), [b"second"], durable=False)
    assert path.read_bytes() == b"second" and len(synced) == 2  # the new bytes, then the folder
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]  # no temporary left


def test_a_failed_flush_commits_nothing(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    store.write_blob("a" * 32, b"header", [b"body"])

    def failing(handle):
        raise OSError(5, "syncfs: Input/output error")

    monkeypatch.setattr(store_module, "flush_filesystem", failing)
    with pytest.raises(StoreError, match="flushing the store's filesystem"):
        store.commit("run-1", {}, blobs=["a" * 32])
    assert store.latest_version() == 0


def test_flush_handle_of_a_store_not_created_yet_is_its_nearest_folder(tmp_path):
    handle = backend.open_flush_handle(LocalFileSystem(), str(tmp_path / "not" / "yet"))
    try:
        assert os.path.samestat(os.fstat(handle), os.stat(tmp_path))
        backend.flush_filesystem(handle)
    finally:
        os.close(handle)
