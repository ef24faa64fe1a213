"""Object keys: unsafe keys and ids are refused before any filesystem call, on every backend."""
from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import object_paths

UNSAFE_KEYS = [
    "", "../x", "a/../b", "a/..", "..", "a/./b", ".", "/etc/passwd", "a//b", "a/", "a\\b",
    "..\\x", "a\x00b", "C:/x", "s3://other/x", "a/b..c",
]
UNSAFE_IDS = ["", "ab", "../abcd", "abcd/../../x", "/abcdef", "ab\\cdef", "abcd\x00", "abc.def", "a" * 129]


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_refused(key):
    with pytest.raises(StoreError):
        object_paths.check_key(key)


@given(st.text(alphabet="ab./\\\x00:", max_size=12))
def test_every_accepted_key_stays_under_the_root(key):
    try:
        object_paths.check_key(key)
    except StoreError:
        return
    joined = posixpath.normpath(f"/root/{key}")
    assert joined.startswith("/root/") and joined == f"/root/{key}"


class NoFilesystem:
    """Stands in for the store's filesystem: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"filesystem touched: {name}")


@pytest.fixture
def store_without_fs(store):
    store.fs = store._log.fs = NoFilesystem()
    return store


@pytest.mark.parametrize("blob_id", UNSAFE_IDS)
def test_unsafe_blob_ids_are_refused_before_any_filesystem_call(store_without_fs, blob_id):
    s = store_without_fs
    calls = [
        lambda: s.write_blob(blob_id, b"h", [b"body"]),
        lambda: s.read_blob_header(blob_id),
        lambda: s.replace_blob_header(blob_id, b"h"),
        lambda: s.open_blob_body(blob_id),
        lambda: s.blob_exists(blob_id),
        lambda: s.commit("run-1", {}, [blob_id]),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            call()


@pytest.mark.parametrize("name", ["../errors", "errors/x", "/abs", "a\\b", "x\x00", "..", ".hidden", ""])
def test_unsafe_table_and_run_names_are_refused_before_any_filesystem_call(store_without_fs, name):
    s = store_without_fs
    table = pa.table({"x": [1]})
    calls = [
        lambda: s.write_table_part(name, "run-1", 0, table),
        lambda: s.write_table_part("errors", name, 0, table),
        lambda: s.write_table_part("errors", "run-1", name, table),
        lambda: s.write_run_file(name, "run-1", "report.html", b""),
        lambda: s.write_run_file("reports", name, "report.html", b""),
        lambda: s.write_run_file("reports", "run-1", name, b""),
        lambda: s.read_table(name),
        lambda: s.commit(name, {}),
        lambda: s.commit("run-1", {name: []}),
        lambda: s.is_committed(name),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            call()


@pytest.mark.parametrize("table", ["blobs", "_commits"])
def test_the_store_own_folders_are_not_tables(store_without_fs, table):
    with pytest.raises(StoreError):
        store_without_fs.write_table_part(table, "run-1", 0, pa.table({"x": [1]}))
    with pytest.raises(StoreError):
        store_without_fs.commit("run-1", {table: []})


@pytest.mark.parametrize("key", ["errors/../../../etc/passwd", "/etc/passwd", "errors/a\\..\\b", "errors/\x00"])
def test_unsafe_file_keys_in_a_commit_are_refused_before_any_filesystem_call(store_without_fs, key):
    with pytest.raises(StoreError):
        store_without_fs.commit("run-1", {"errors": [key]})
    with pytest.raises(StoreError):
        store_without_fs.open_committed_file(key)


@pytest.mark.parametrize("key", ["../../outside.parquet", "_commits/00000000000000000001.json", "blobs/ab/cd/abcd0001"])
def test_a_tampered_commit_record_naming_an_unsafe_key_is_refused(store, key):
    record = {"format": 1, "version": 1, "run_id": "evil", "committed_at": "", "blobs": [],
              "replace": [], "meta": {}, "files": {"errors": [key]}}
    store.fs.makedirs(store._path("_commits"), exist_ok=True)
    store.fs.pipe_file(store._path("_commits/00000000000000000001.json"), json.dumps(record).encode())
    with pytest.raises(StoreError, match=key.split("/")[-1]):
        store.read_table("errors")


@given(
    st.sampled_from(["errors", "fingerprints", "reports"]),
    st.from_regex(object_paths.RUN_ID_PATTERN, fullmatch=True).filter(lambda r: ".." not in r),
    st.from_regex(object_paths.BLOB_ID_PATTERN, fullmatch=True),
    st.booleans(),
)
def test_every_key_the_store_makes_is_recognised_as_its_own(table, name, blob_id, interrupted):
    made = [
        object_paths.commit_key(len(name)),
        object_paths.blob_body_key(blob_id), object_paths.blob_header_key(blob_id),
        object_paths.table_part_key(table, name, name, "0123456789abcdef0123456789abcdef"),
    ]
    if not name.endswith(".parquet"):
        made.append(object_paths.run_file_key(table, name, name, "0123456789abcdef0123456789abcdef"))
    for key in made:
        key += object_paths.temporary_suffix() if interrupted else ""
        assert object_paths.is_store_key(key), key
        object_paths.check_key(key)
    assert object_paths.blob_id_of(object_paths.blob_header_key(blob_id)) == blob_id


@pytest.mark.parametrize("key", ["notes.txt", "blobs/ab/cd/abcd.bak", "blobs/xy/cd/abcd", "errors/r1/part-0.parquet",
                                 "blobs/ab/cd/abcd.tmp-x", "_commits/1.json", "errors/r1/0123-report.html"])
def test_other_keys_are_not_the_store_own(key):
    assert not object_paths.is_store_key(key)
