"""Round trips of blobs and tables, commit visibility and idempotency, on every backend."""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow as pa
import pytest

from imgdedup.pipeline.errors import CommitConflict, StoreError
from imgdedup.pipeline.store import Store, commitlog, object_paths, schemas


def error_rows(run_id: str, sources: list[str]) -> pa.Table:
    n = len(sources)
    return pa.table(
        {"source": sources, "stage": ["decode"] * n, "error_type": ["DecodeError"] * n,
         "message": ["truncated"] * n, "run_id": [run_id] * n},
        schema=schemas.errors_schema(),
    )


def fingerprint_rows(image_ids: list[str], width: int = 32) -> pa.Table:
    n = len(image_ids)
    schema = schemas.fingerprints_schema(width, algo="lbph", bits=width * 8, key_id="k1")
    return pa.table({
        "image_id": image_ids,
        "fingerprint": [hashlib.sha256(i.encode()).digest()[:width].ljust(width, b"\0") for i in image_ids],
        "algo": ["lbph"] * n, "key_id": ["k1"] * n, "cluster_id": [None] * n,
        "width": [640] * n, "height": [480] * n, "bytes": [1234] * n,
        "blob": [f"blobs/{i[:2]}/{i[2:4]}/{i}" for i in image_ids], "duplicate_of": [None] * n,
        "distance": [None] * n, "source": [f"/photos/{i}.jpg" for i in image_ids],
        "ingested_at": [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * n,
        "hash_sealed": [b"sealed" + i.encode() for i in image_ids],
        "content_digest": [hashlib.sha256(b"c" + i.encode()).digest() for i in image_ids],
        "quality": [80] * n, "format": ["JPEG"] * n, "lossless": [False] * n, "jpeg_quality": [90] * n,
        "exif": [True] * n, "upload_id": [None] * n,
        "resolution_mac": [None] * n, "feature_keys": [None] * n,
    }, schema=schema)


def chunks_of(data: bytes, size: int):
    return (data[i:i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", [0, 1, 65_536, 6 * 2**20 + 1])
def test_blob_round_trip_streams_body_and_header(store, size):
    body = hashlib.shake_256(str(size).encode()).digest(size) if size else b""
    key = store.write_blob("a1b2c3d4", b"HEADER", chunks_of(body, 1 << 20))
    assert key == "blobs/a1/b2/a1b2c3d4"
    with store.open_blob_body("a1b2c3d4") as f:
        assert f.read() == body
    assert store.read_blob_header("a1b2c3d4") == b"HEADER"
    assert store.blob_exists("a1b2c3d4")


def test_replacing_a_header_keeps_the_body_object(store):
    store.write_blob("feedbeef", b"old header", [b"ciphertext"])
    store.commit("r1", {}, ["feedbeef"])
    body_path = store._path("blobs/fe/ed/feedbeef")
    store.fs.invalidate_cache()
    before = store.fs.info(body_path)
    store.replace_blob_header("feedbeef", b"new header")
    assert store.read_blob_header("feedbeef") == b"new header"
    assert store.open_blob_body("feedbeef").read() == b"ciphertext"
    store.fs.invalidate_cache()
    assert store.fs.info(body_path) == before  # same object: inode and mtime, ETag, creation time


def test_missing_blob_is_a_store_error_naming_it(store):
    for call in (store.read_blob_header, store.open_blob_body):
        with pytest.raises(StoreError, match="0000dead"):
            call("0000dead")
    with pytest.raises(StoreError, match="0000dead"):
        store.replace_blob_header("0000dead", b"h")
    assert not store.blob_exists("0000dead")


def test_committed_blob_body_is_immutable(store):
    store.write_blob("cafe0001", b"h", [b"one"])
    store.commit("r1", {}, ["cafe0001"])
    with pytest.raises(StoreError, match="immutable"):
        store.write_blob("cafe0001", b"h", [b"two"])
    assert store.open_blob_body("cafe0001").read() == b"one"


def test_uncommitted_blob_may_be_rewritten(store):
    store.write_blob("cafe0002", b"h1", [b"crashed run"])
    store.write_blob("cafe0002", b"h2", [b"re-run"])
    assert store.open_blob_body("cafe0002").read() == b"re-run"
    assert list(store.iter_blob_ids()) == []
    assert list(store.iter_blob_ids(committed_only=False)) == ["cafe0002"]


def test_table_round_trip_keeps_schema_and_metadata(store):
    rows = fingerprint_rows(["img00001", "img00002", "img00003"])
    key = store.write_table_part("fingerprints", "run-1", 0, rows)
    assert store.read_table("fingerprints").num_rows == 0  # written, not committed
    assert store.commit("run-1", {"fingerprints": [key]}) == 1
    back = store.read_table("fingerprints")
    assert back.equals(rows)
    assert back.schema.metadata == rows.schema.metadata
    assert schemas.schema_metadata(back.schema)["key_id"] == "k1"


def test_empty_table_has_explicit_schema(store):
    assert store.read_table("errors").schema == schemas.errors_schema()
    sealed = schemas.fingerprints_schema(60, mode="sealed")
    empty = store.read_table("fingerprints", schema=sealed)
    assert empty.num_rows == 0 and empty.schema.field("fingerprint").type == pa.binary(60)


def test_versions_read_the_union_of_runs_committed_so_far(store):
    for n, run in enumerate(["a", "b", "c"], start=1):
        key = store.write_table_part("errors", run, 0, error_rows(run, [f"{run}/{i}" for i in range(n)]))
        assert store.commit(run, {"errors": [key]}, meta={"n": n}) == n
    assert [store.read_table("errors", version=v).num_rows for v in range(4)] == [0, 1, 3, 6]
    assert store.committed_runs() == {"a": 1, "b": 2, "c": 3}
    assert store.commit_record(2)["meta"] == {"n": 2}
    with pytest.raises(StoreError, match="no such version"):
        store.read_table("errors", version=4)


def test_recommitting_a_run_id_adds_nothing(store, location):
    key = store.write_table_part("errors", "r1", 0, error_rows("r1", ["x", "y"]))
    assert store.commit("r1", {"errors": [key]}) == 1
    rerun_key = location.open().write_table_part("errors", "r1", 0, error_rows("r1", ["x", "y"]))
    assert location.open().commit("r1", {"errors": [rerun_key]}) == 1
    assert location.open().latest_version() == 1
    assert location.open().read_table("errors").column("source").to_pylist() == ["x", "y"]


def test_replace_supersedes_earlier_parts_but_not_older_versions(store):
    def clusters(version: int, n: int) -> pa.Table:
        return pa.table({"cluster_id": list(range(n)), "centroid": [bytes(32)] * n, "size": [1] * n,
                         "radius": [0] * n, "version": [version] * n}, schema=schemas.clusters_schema())
    k1 = store.write_table_part("clusters", "fit-1", 0, clusters(1, 4))
    store.commit("fit-1", {"clusters": [k1]})
    k2 = store.write_table_part("clusters", "fit-2", 0, clusters(2, 3))
    store.commit("fit-2", {"clusters": [k2]}, replace=["clusters"])
    assert store.read_table("clusters").column("version").to_pylist() == [2, 2, 2]
    assert store.read_table("clusters", version=1).num_rows == 4


def test_commit_refuses_files_that_are_not_there_or_not_of_the_table(store):
    key = store.write_table_part("errors", "r1", 0, error_rows("r1", ["x"]))
    with pytest.raises(StoreError, match="not a file of table"):
        store.commit("r1", {"reports": [key]})
    with pytest.raises(StoreError, match="not in the store"):
        store.commit("r1", {"errors": ["errors/r1/part-0-missing.parquet"]})
    with pytest.raises(StoreError, match="not in the store"):
        Store(store.url, _options(store)).commit("r1", {}, ["0123abcd"])
    assert store.latest_version() == 0


def test_a_guard_sees_each_attempt_and_can_refuse_the_commit(store):
    seen = []

    def refuse_after_one(version):
        seen.append(version)
        if version >= 1:
            raise CommitConflict("run", f"version {version} landed")

    assert store.commit("first", {}, guard=refuse_after_one) == 1
    with pytest.raises(CommitConflict):
        store.commit("second", {}, guard=refuse_after_one)
    assert seen == [0, 1] and store.latest_version() == 1 and "second" not in store.committed_runs()
    assert store.commit("second", {}, guard=seen.append) == 2 and seen[-1] == 1


def test_commit_meta_must_be_json(store):
    with pytest.raises(StoreError, match="JSON"):
        store.commit("r1", {}, meta={"when": dt.datetime.now()})


def _options(store: Store) -> dict:
    return dict(store.fs.storage_options)


def test_parts_written_before_a_nullable_column_was_added_read_with_nulls(store):
    old = error_rows("r1", ["x"]).drop_columns(["run_id"])
    key = store.write_table_part("errors", "r1", 0, old)
    store.commit("r1", {"errors": [key]})
    relaxed = schemas.errors_schema().set(4, pa.field("run_id", pa.string(), nullable=True))
    assert store.read_table("errors", schema=relaxed).column("run_id").to_pylist() == [None]
    with pytest.raises(StoreError, match="run_id"):
        store.read_table("errors", schema=schemas.errors_schema())


def test_a_part_whose_types_do_not_cast_is_named(store):
    key = store.write_table_part("fingerprints", "r1", 0, fingerprint_rows(["img00001"], width=16))
    store.commit("r1", {"fingerprints": [key]})
    assert store.read_table("fingerprints").schema.field("fingerprint").type == pa.binary(16)
    with pytest.raises(StoreError, match=key):
        store.read_table("fingerprints", schema=schemas.fingerprints_schema(32))


def _put_record(store: Store, version: int, record: object) -> None:
    store.fs.makedirs(store._path("_commits"), exist_ok=True)
    store.fs.pipe_file(store._path(f"_commits/{version:020d}.json"), json.dumps(record).encode())


def test_a_malformed_commit_record_is_a_store_error(store):
    _put_record(store, 1, {"format": 1, "version": 1, "run_id": "r1"})
    with pytest.raises(StoreError, match="malformed"):
        store.latest_version()


def test_a_gap_in_the_commit_log_is_a_store_error(store):
    key = store.write_table_part("errors", "r1", 0, error_rows("r1", ["x"]))
    record = store.commit_record(store.commit("r1", {"errors": [key]}))
    _put_record(store, 3, {**record, "version": 3, "run_id": "r3"})
    with pytest.raises(StoreError, match="gaps at versions \\[2\\]"):
        Store(store.url, _options(store)).read_table("errors")


def test_run_files_are_invisible_until_committed_then_read_back(store):
    key = store.write_run_file("reports", "r1", "report.html", b"<html>savings</html>")
    assert key.startswith("reports/r1/") and key.endswith("-report.html")
    with pytest.raises(StoreError, match="no commit lists"):
        store.open_committed_file(key)
    store.commit("r1", {"reports": [key]})
    with store.open_committed_file(key) as f:
        assert f.read() == b"<html>savings</html>"
    assert store.read_table("reports").num_rows == 0  # not a Parquet part
    with pytest.raises(StoreError):
        store.write_run_file("reports", "r1", "sneaky.parquet", b"")
    with pytest.raises(StoreError):
        store.open_committed_file("../" + key)


def test_reading_some_columns_keeps_their_types_and_metadata(store):
    rows = fingerprint_rows(["img00001", "img00002"])
    store.commit("r1", {"fingerprints": [store.write_table_part("fingerprints", "r1", 0, rows)]})
    back = store.read_table("fingerprints", columns=["fingerprint", "image_id"])
    assert back.column_names == ["fingerprint", "image_id"]
    assert back.equals(rows.select(["fingerprint", "image_id"]))
    assert schemas.schema_metadata(back.schema)["hash_bits"] == "256"
    empty = Store(store.url, _options(store)).read_table("errors", version=0, columns=["source"])
    assert empty.schema.names == ["source"] and empty.num_rows == 0
    with pytest.raises(StoreError, match="no such columns"):
        store.read_table("fingerprints", columns=["pixels"])


def test_a_lost_version_the_listing_does_not_show_is_an_error_not_a_spin(store, monkeypatch):
    """A create-exclusive write that reports the record exists, while no listing shows it, must not loop."""
    monkeypatch.setattr(commitlog, "write_exclusive", lambda *args: False)
    with pytest.raises(StoreError, match="not listed"):
        store.commit("r1", {})


def test_commit_checks_blobs_another_writer_wrote_and_names_a_missing_one(store):
    # Blobs written through another Store object are checked in the store (in parallel).
    writer = Store(store.url, _options(store))
    ids = [f"{i:08x}" for i in range(40)]
    for blob_id in ids:
        writer.write_blob(blob_id, b"header", [b"body"])
    store.fs.rm(store._path(object_paths.blob_header_key(ids[17])))
    with pytest.raises(StoreError, match=ids[17]):
        store.commit("r1", {}, ids)
    assert store.commit("r2", {}, ids[:17] + ids[18:]) == 1
