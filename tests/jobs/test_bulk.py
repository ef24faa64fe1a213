"""`imgdedup bulk`: bad files become error rows, groups are right and the same on every store, re-runs add only new files."""
from __future__ import annotations

import io
import os
import time
import uuid

import pytest
from distributed import Client, LocalCluster
from PIL import Image

from imgdedup.jobs.bulk import BulkError, run_bulk
from imgdedup.jobs.bulk_commit import print_summary
from imgdedup.jobs.cli import main as cli_main
from imgdedup.jobs.unmerge import unmerge
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.blob import open_stream
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.errors import IncompatibleStoreError, MergeError
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key, blob_header_key
from tests.jobs.bulk_sets import encode, groups_by_name, labelled_set, pair_precision_recall, write_files
from tests.store.conftest import BUCKET, s3_options  # noqa: F401  (the loopback S3 server fixture)

KEY = GroupKey(bytes(range(32)))
SMALL = ["dask.partition_size=4", "dedup.clusters=3"]


@pytest.fixture(scope="module")
def client():
    # Threads: memory:// stores and sources live inside this process.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def labelled(test_data):
    return labelled_set(test_data / "dev", 5)


def _run(client, source, store_url, *overrides, **kwargs):
    return run_bulk(source, store_url, KEY, load_config(overrides=[*SMALL, *overrides]), client=client, **kwargs)


def _memory_url() -> str:
    return f"memory://{uuid.uuid4().hex}"


def test_bad_files_become_one_error_row_each_and_the_rest_is_stored(client, labelled, tmp_path):
    good = {name: data for name, (data, _) in list(labelled.items())[:6]}
    photo = next(iter(good.values()))
    big = encode(Image.new("RGB", (1500, 1500), (90, 120, 40)), "PNG")
    bad = {
        "bad/corrupt.jpg": photo[:20] + os.urandom(3000),
        "bad/truncated.jpg": photo[: len(photo) // 3],
        "bad/empty.png": b"",
        "bad/not-an-image.jpg": b"plain text, named like a photo\n" * 10,
        "bad/oversized.png": big,
    }
    write_files(str(tmp_path / "src"), {**good, **bad, "notes/README.txt": b"not an image, not named like one"})
    url = _memory_url()
    summary = _run(client, str(tmp_path / "src"), url, "decode.max_pixels=2000000")

    assert summary["errors"] == len(bad) and summary["skipped"] == 1 and summary["images"] == len(good)
    by_source = {e["source"].rsplit("/src/", 1)[1]: e for e in summary.errors}
    assert set(by_source) == set(bad)
    assert all(e["stage"] == "decode" and e["error_type"] == "DecodeError" for e in by_source.values())
    assert "too many pixels" in by_source["bad/oversized.png"]["message"]
    store = Store(url)
    errors = store.read_table("errors").to_pylist()
    assert sorted(e["source"] for e in errors) == sorted(e["source"] for e in summary.errors)
    assert {e["run_id"] for e in errors} == {summary.run_id}
    rows = store.read_table("fingerprints").to_pylist()
    assert sorted(r["source"].rsplit("/src/", 1)[1] for r in rows) == sorted(good)


def test_runs_commit_tables_blobs_and_groups(client, labelled, tmp_path):
    files = {name: data for name, (data, _) in labelled.items()}
    write_files(str(tmp_path / "src"), files)
    url = _memory_url()
    summary = _run(client, str(tmp_path / "src"), url)
    store = Store(url)
    rows = store.read_table("fingerprints").to_pylist()
    assert len(rows) == len(files) == summary["images"]
    assert len({r["image_id"] for r in rows}) == len(rows)
    canonicals = [r for r in rows if r["duplicate_of"] is None]
    pointers = [r for r in rows if r["duplicate_of"] is not None]
    assert summary["stored"] == len(canonicals) and summary["duplicates"] == len(pointers)
    assert all(r["blob"] and r["distance"] is None for r in canonicals)
    assert all(r["blob"] is None and 0 <= r["distance"] for r in pointers)
    ids = {r["image_id"] for r in canonicals}
    assert all(p["duplicate_of"] in ids for p in pointers)
    committed = set(store.iter_blob_ids())
    assert ids <= committed  # pointers' own blobs are kept too, for the grace period
    assert committed - ids == {p["image_id"] for p in pointers}
    # A canonical's blob decrypts to its file's bytes.
    some = canonicals[0]
    with store.open_blob_body(some["image_id"]) as body:
        plain = b"".join(open_stream(KEY, some["image_id"], store.read_blob_header(some["image_id"]), body))
    assert plain == files[some["source"].rsplit("/src/", 1)[1]]
    clusters = store.read_table("clusters")
    assert clusters.column("size").to_numpy().sum() == len(canonicals)
    metrics = {r["name"]: r["value"] for r in store.read_table("reports").to_pylist()}
    assert metrics["images"] == len(files) and "seconds_fingerprint" in metrics


def test_labelled_set_groups_reach_precision(client, labelled, tmp_path):
    write_files(str(tmp_path / "src"), {name: data for name, (data, _) in labelled.items()})
    url = _memory_url()
    _run(client, str(tmp_path / "src"), url)
    groups = groups_by_name(Store(url), str(tmp_path / "src"))
    precision, recall = pair_precision_recall(groups, {name: group for name, (_, group) in labelled.items()})
    assert precision >= 0.99
    assert recall >= 0.8


def test_same_groups_on_memory_and_local_stores_and_sources(client, labelled, tmp_path):
    files = {name: data for name, (data, _) in labelled.items()}
    local_source, memory_source = str(tmp_path / "src"), _memory_url()
    write_files(local_source, files)
    write_files(memory_source, files)
    found = []
    for source in (local_source, memory_source):
        for store_url in (_memory_url(), str(tmp_path / uuid.uuid4().hex)):
            _run(client, source, store_url)
            found.append(groups_by_name(Store(store_url), source.removeprefix("memory://")))
    assert all(groups == found[0] for groups in found[1:])
    assert any(len(g) > 1 for g in found[0])


def test_same_groups_on_the_s3_store(client, labelled, tmp_path, s3_options):
    files = {name: data for name, (data, _) in labelled.items()}
    source = str(tmp_path / "src")
    write_files(source, files)
    found = []
    for store_url, options in ((_memory_url(), None), (f"s3://{BUCKET}/{uuid.uuid4().hex}", s3_options)):
        _run(client, source, store_url, storage_options=options)
        found.append(groups_by_name(Store(store_url, options), source))
    assert found[0] == found[1]


def test_rerun_reads_only_new_files_and_dedups_them_against_the_store(client, labelled, tmp_path):
    names = sorted(labelled)
    first = [n for n in names if not n.endswith(("rot90.png", "mirror.jpg"))]
    source, url = str(tmp_path / "src"), _memory_url()
    write_files(source, {n: labelled[n][0] for n in first})
    _run(client, source, url)
    write_files(source, {n: labelled[n][0] for n in names if n not in first})
    # Byte-for-byte copy of a stored original under a new name: a pointer with no blob of its own.
    original = next(n for n in names if n.endswith("/original.jpg"))  # its group's canonical
    write_files(source, {"copies/original.jpg": labelled[original][0]})
    summary = _run(client, source, url)
    assert summary["images"] == len(names) - len(first) + 1 and summary["unchanged"] == len(first)
    assert summary["exact_duplicates"] == 1
    store = Store(url)
    rows = store.read_table("fingerprints").to_pylist()
    assert len(rows) == len({r["image_id"] for r in rows}) == len(names) + 1
    by_id = {r["image_id"]: r for r in rows}
    old_ids = {r["image_id"] for r in rows if not r["source"].endswith(("rot90.png", "mirror.jpg", "copies/original.jpg"))}
    new_pointers = [r for r in rows if r["image_id"] not in old_ids and r["duplicate_of"]]
    # New copies point to canonicals committed by the first run.
    assert new_pointers and all(r["duplicate_of"] in old_ids for r in new_pointers)
    copy = next(r for r in rows if r["source"].endswith("copies/original.jpg"))
    assert copy["distance"] == 0 and by_id[copy["duplicate_of"]]["content_digest"] == copy["content_digest"]
    assert copy["image_id"] not in set(store.iter_blob_ids())
    # A third run over an unchanged source, by stat this time, reads nothing.
    again = _run(client, source, url, "bulk.incremental=stat")
    assert again["images"] == 0 and again["bytes_read"] == 0 and again["unchanged"] == len(names) + 1


def test_sealed_mode_groups_equal_tokens_mode(client, labelled, tmp_path):
    source = str(tmp_path / "src")
    write_files(source, {name: data for name, (data, _) in labelled.items()})
    found = {}
    for mode in ("tokens", "sealed"):
        url = _memory_url()
        _run(client, source, url, f"crypto.mode={mode}")
        found[mode] = groups_by_name(Store(url), source)
    assert found["tokens"] == found["sealed"]


def test_a_task_that_keeps_failing_fails_the_run_and_commits_nothing(client, labelled, tmp_path):
    write_files(str(tmp_path / "src"), {name: data for name, (data, _) in list(labelled.items())[:4]})
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    (store_dir / "blobs").write_bytes(b"a file where the blob folder should be")
    with pytest.raises(BulkError, match="failed after 2 attempts"):
        _run(client, str(tmp_path / "src"), str(store_dir), "bulk.retries=1")
    assert Store(str(store_dir)).latest_version() == 0


def test_a_store_made_with_other_settings_is_refused(client, labelled, tmp_path):
    write_files(str(tmp_path / "src"), {name: data for name, (data, _) in list(labelled.items())[:2]})
    url = _memory_url()
    _run(client, str(tmp_path / "src"), url)
    write_files(str(tmp_path / "more"), {name: data for name, (data, _) in list(labelled.items())[2:4]})
    with pytest.raises(IncompatibleStoreError, match="hash_bits '256', this run '64'"):
        _run(client, str(tmp_path / "more"), url, "hash.algo=phash", "hash.bits=64", "dedup.threshold_t=10")
    with pytest.raises(IncompatibleStoreError, match="key_id"):
        run_bulk(str(tmp_path / "more"), url, GroupKey.generate(), load_config(overrides=SMALL), client=client)
    assert Store(url).latest_version() == 1


def test_summary_prints_counts_and_errors(client, tmp_path, capsys):
    write_files(str(tmp_path / "src"), {"a.png": encode(Image.new("RGB", (64, 48), (10, 200, 30)), "PNG"),
                                        "b.jpg": b"no image here"})
    summary = _run(client, str(tmp_path / "src"), _memory_url())
    print_summary(summary)
    out = capsys.readouterr().out
    assert f"run {summary.run_id}: committed as store version 1" in out
    assert "images 1, stored 1" in out and "errors 1" in out and "b.jpg: decode: DecodeError" in out
    # The stages' seconds and what lies outside them add up to the run's wall time.
    assert summary.wall_seconds >= summary["seconds_total"] > 0
    assert f"total {summary['seconds_total']:.2f}; wall {summary.wall_seconds:.2f}, of which " in out


def test_a_run_with_nothing_new_commits_nothing_and_says_so(client, labelled, tmp_path):
    (tmp_path / "src").mkdir()
    url = _memory_url()
    summary = _run(client, str(tmp_path / "src"), url)
    assert summary["images"] == 0 and summary.version == 0 and not summary.committed
    write_files(str(tmp_path / "src"), {name: data for name, (data, _) in list(labelled.items())[:3]})
    assert _run(client, str(tmp_path / "src"), url).version == 1
    again = _run(client, str(tmp_path / "src"), url)
    assert not again.committed and again.version == 1 and again["unchanged"] == 3
    assert Store(url).latest_version() == 1
    printed = io.StringIO()
    print_summary(again, printed)
    assert "nothing new, committed nothing (the store stays at version 1)" in printed.getvalue()



def test_expired_pointer_blobs_are_released_and_gc_removes_only_them(client, labelled, tmp_path):
    files = {name: data for name, (data, _) in labelled.items()}
    source, url = str(tmp_path / "src"), _memory_url()
    write_files(source, files)
    _run(client, source, url, "dedup.pointer_blob_grace_days=0")
    store = Store(url)
    rows = store.read_table("fingerprints").to_pylist()
    canonicals = {r["image_id"] for r in rows if r["duplicate_of"] is None}
    kept = set(store.commit_record(store.latest_version())["meta"]["pointer_blobs"])
    assert len(kept) >= 2
    unmerged = min(kept)
    unmerge(store, KEY, next(r["duplicate_of"] for r in rows if r["image_id"] == unmerged), unmerged)

    second = _run(client, source, url, "dedup.pointer_blob_grace_days=0")
    record = store.commit_record(second.version)
    assert record["release"] == sorted(kept - {unmerged})
    assert set(store.iter_blob_ids()) == canonicals | {unmerged}
    removed = store.gc(grace_seconds=0, now=time.time() + 10)
    assert set(removed) == {k for i in kept - {unmerged} for k in (blob_body_key(i), blob_header_key(i))}
    assert all(store.blob_exists(i) for i in canonicals | {unmerged})

    # A pointer's get still gives its canonical's bytes; undoing its merge is refused now.
    pointer = next(r for r in rows if r["image_id"] in kept - {unmerged})
    key_file = write_key_file(tmp_path / "group.key", KEY)
    out = tmp_path / "got.img"
    assert cli_main(["get", pointer["image_id"], "--out", str(out), "--store", url, "--key", str(key_file)]) == 0
    canonical = next(r for r in rows if r["image_id"] == pointer["duplicate_of"])
    assert out.read_bytes() == files[canonical["source"].rsplit("/src/", 1)[1]]
    with pytest.raises(MergeError, match="no longer kept"):
        unmerge(store, KEY, pointer["duplicate_of"], pointer["image_id"])
    # A third run has nothing left to release, nor anything else to commit.
    third = _run(client, source, url, "dedup.pointer_blob_grace_days=0")
    assert not third.committed and third.version == second.version
