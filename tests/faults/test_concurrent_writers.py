"""A bulk run that meets an ingest commit on the same store: it takes the committed images as
unchanged instead of failing the whole run, and no image gets a second row or blob."""
from __future__ import annotations

import collections

import imgdedup.jobs.bulk as bulk
import imgdedup.jobs.bulk_task as bulk_task
from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli


def _rows_per_image(url: str) -> collections.Counter:
    ids = Store(url).read_table(schemas.FINGERPRINTS, columns=["image_id"]).column("image_id").to_pylist()
    return collections.Counter(ids)


def _ingest_right_after_the_run_reads_the_store(monkeypatch, argv):
    read = bulk.read_stored_rows

    def then_ingest(*args, **kwargs):
        rows = read(*args, **kwargs)
        assert cli(*argv) == 0
        return rows

    monkeypatch.setattr(bulk, "read_stored_rows", then_ingest)


def test_an_ingest_commit_during_a_bulk_run(photos, key_file, tmp_path, monkeypatch, capsys, scheduler):
    key = key_file("group.key")
    monkeypatch.chdir(tmp_path)
    _ingest_right_after_the_run_reads_the_store(
        monkeypatch, ["ingest", "photos/perception_image2.jpg", "photos/perception_image3.jpg",
                      "--store", "store", "--key", key])
    assert cli("bulk", "photos", "--store", "store", "--key", key, "--scheduler", scheduler) == 0
    assert "unchanged 2" in capsys.readouterr().out
    counts = _rows_per_image(str(tmp_path / "store"))
    assert len(counts) == 6 and set(counts.values()) == {1}


def test_an_ingest_commit_that_lands_while_a_task_writes_is_retried_away(photos, key_file, tmp_path, monkeypatch,
                                                                          capsys, scheduler):
    key = key_file("group.key")
    monkeypatch.chdir(tmp_path)
    _ingest_right_after_the_run_reads_the_store(
        monkeypatch, ["ingest", "photos/perception_image4.jpg", "--store", "store", "--key", key])
    # The task's first look at the store is stale (as if the ingest landed just after it):
    # its blob write then meets a committed blob, the task fails, and its retry sees the commit.
    looks = []
    real = bulk_task.committed_since

    def stale_first(store, version):
        looks.append(version)
        return set() if len(looks) == 1 else real(store, version)

    monkeypatch.setattr(bulk_task, "committed_since", stale_first)
    assert cli("--set", "dask.partition_size=100", "bulk", "photos", "--store", "store", "--key", key,
               "--scheduler", scheduler) == 0
    assert len(looks) == 2 and "unchanged 1" in capsys.readouterr().out
    counts = _rows_per_image(str(tmp_path / "store"))
    assert len(counts) == 6 and set(counts.values()) == {1}


def _copies(photos, folder, names: dict[str, str]):
    """``folder`` holding byte-identical copies of ``photos`` files under other names (``{photo: copy}``)."""
    folder.mkdir()
    for photo, copy in names.items():
        (folder / copy).write_bytes((photos / photo).read_bytes())


def _rows_with_one_canonical_per_digest(url: str) -> dict[str, dict]:
    """The store's fingerprints rows by source, after checking no content digest has two canonicals."""
    rows = Store(url).read_table(schemas.FINGERPRINTS).to_pylist()
    canonicals = collections.Counter(r["content_digest"] for r in rows if r["duplicate_of"] is None)
    assert set(canonicals.values()) == {1}
    return {r["source"]: r for r in rows}


def test_the_same_bytes_under_other_names_committed_during_a_bulk_run_stay_one_canonical(
        photos, key_file, tmp_path, monkeypatch, capsys, scheduler):
    key = key_file("group.key")
    monkeypatch.chdir(tmp_path)
    names = ("perception_image2.jpg", "perception_image3.jpg")
    _copies(photos, tmp_path / "renamed", {name: f"copy-of-{name}" for name in names})
    _ingest_right_after_the_run_reads_the_store(
        monkeypatch, ["ingest", "renamed", "--store", "store", "--key", key])
    assert cli("bulk", "photos", "--store", "store", "--key", key, "--scheduler", scheduler) == 0
    by_source = _rows_with_one_canonical_per_digest(str(tmp_path / "store"))
    assert len(by_source) == 8
    for name in names:
        mine, theirs = by_source[f"photos/{name}"], by_source[f"renamed/copy-of-{name}"]
        assert (mine["duplicate_of"], mine["distance"], mine["blob"]) == (theirs["image_id"], 0, None)
        out = tmp_path / f"got-{name}"
        assert cli("get", mine["image_id"], "--store", "store", "--key", key, "--out", out) == 0
        assert out.read_bytes() == (photos / name).read_bytes()


def test_a_copy_committed_just_before_the_bulk_record_makes_the_run_decide_again(
        photos, key_file, tmp_path, monkeypatch, capsys, scheduler):
    key = key_file("group.key")
    monkeypatch.chdir(tmp_path)
    _copies(photos, tmp_path / "renamed", {"perception_image5.jpg": "copy.jpg"})
    commit, calls = Store.commit, []

    def ingest_first(self, run_id, *args, **kwargs):
        # The ingest lands after the run's last look at the store, before its commit record.
        if run_id.startswith("bulk-") and not calls:
            calls.append(run_id)
            assert cli("ingest", "renamed", "--store", "store", "--key", key) == 0
        return commit(self, run_id, *args, **kwargs)

    monkeypatch.setattr(Store, "commit", ingest_first)
    assert cli("bulk", "photos", "--store", "store", "--key", key, "--scheduler", scheduler) == 0
    by_source = _rows_with_one_canonical_per_digest(str(tmp_path / "store"))
    assert calls and len(by_source) == 7
    assert by_source["photos/perception_image5.jpg"]["duplicate_of"] == by_source["renamed/copy.jpg"]["image_id"]
