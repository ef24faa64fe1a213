"""Ingest: the upload protocol, one decision per content digest, agreement with the bulk job."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs.ingest import OUTCOMES, Ingestor, stable_files, summary_line
from imgdedup.jobs.cli import main
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.blob import open_bytes
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store, schemas
from tests.jobs.bulk_sets import groups_by_name, labelled_set, write_files
from tests.jobs.ingest_images import SUMMARY_LOGGED, ingest_finished, noise_png, rows_per_digest


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def labelled(test_data):
    return labelled_set(test_data / "dev", 6)


@pytest.fixture(scope="module")
def source(tmp_path_factory, labelled):
    root = tmp_path_factory.mktemp("source")
    write_files(str(root), {name: data for name, (data, _) in labelled.items()})
    return root


@pytest.fixture
def key():
    return GroupKey.generate()


def test_first_image_of_an_empty_store_opens_class_zero(tmp_path, key, config):
    ingestor = Ingestor(Store(str(tmp_path / "store")), key, config)
    decision = ingestor.submit(noise_png(1))
    assert decision.kind == "stored" and decision.cluster_id == 0
    assert decision.duplicate_of is None and decision.image_id


def test_one_at_a_time_reaches_the_bulk_jobs_groups(tmp_path, source, labelled, key, config):
    names = sorted(labelled)
    ingestor = Ingestor(Store(str(tmp_path / "ingest")), key, config)
    for name in names:
        decision = ingestor.submit(str(source / name))
        assert decision.kind in ("stored", "duplicate")
    run_bulk(str(source), "memory://ingest-vs-bulk", key, config)

    def same_group_pairs(store: Store, root: str) -> np.ndarray:
        group_of = {member: i for i, group in enumerate(groups_by_name(store, root)) for member in group}
        return np.array([group_of[a] == group_of[b] for i, a in enumerate(names) for b in names[i + 1:]])

    ingest_pairs = same_group_pairs(Store(str(tmp_path / "ingest")), str(source))
    bulk_pairs = same_group_pairs(Store("memory://ingest-vs-bulk"), str(source))  # both record the source as given
    assert ingest_pairs.any() and bulk_pairs.any()
    assert (ingest_pairs == bulk_pairs).mean() >= 0.99


def test_replayed_batch_and_second_ingestor_add_nothing(tmp_path, source, labelled, key, config):
    store = Store(str(tmp_path / "store"))
    files = [str(source / name) for name in sorted(labelled)[:8]] + [str(source / "absent.jpg")]
    first = Ingestor(store, key, config).submit_batch(files)
    version = store.latest_version()
    assert Ingestor(store, key, config).submit_batch(files) == first
    assert Ingestor(store, key, config).submit_batch(list(reversed(files))) == list(reversed(first))
    assert store.latest_version() == version
    assert set(rows_per_digest(store).values()) == {1}
    assert first[-1].kind == "error" and len(store.read_table(schemas.ERRORS)) == 1


def test_same_bytes_under_two_names_are_two_uploads_and_both_ids_download_them(tmp_path, key, config):
    store = Store(str(tmp_path / "store"))
    ingestor = Ingestor(store, key, config)
    data = noise_png(2)
    first = ingestor.submit(data, source="alice/a.png")
    second = ingestor.submit(data, source="bob/b.png")
    assert (first.kind, second.kind) == ("stored", "exact_duplicate")
    assert second.image_id != first.image_id and not (first.replayed or second.replayed)
    assert (second.duplicate_of, second.distance, second.source) == (first.image_id, 0, "bob/b.png")
    rows = store.read_table(schemas.FINGERPRINTS).to_pylist()
    assert [(r["source"], r["duplicate_of"], r["blob"] is None) for r in rows] == [
        ("alice/a.png", None, False), ("bob/b.png", first.image_id, True)]
    assert list(store.iter_blob_ids()) == [first.image_id]  # one blob for both
    key_file = write_key_file(tmp_path / "group.key", key)
    for decision in (first, second):
        out = tmp_path / f"{decision.image_id}.png"
        assert main(["get", decision.image_id, "--out", str(out), "--store", str(tmp_path / "store"),
                     "--key", str(key_file)]) == 0
        assert out.read_bytes() == data
    # Replays, in a batch of their own or within one, add nothing.
    version = store.latest_version()
    again = ingestor.submit_batch([data, data], sources=["bob/b.png", "bob/b.png"])
    assert again == [second, second] and all(d.replayed for d in again)
    assert Ingestor(store, key, config).submit(data, source="alice/a.png") == first
    assert store.latest_version() == version and len(store.read_table(schemas.FINGERPRINTS)) == 2


def test_an_upload_id_identifies_the_upload_whatever_its_source(tmp_path, key, config):
    store = Store(str(tmp_path / "store"))
    ingestor = Ingestor(store, key, config)
    data = noise_png(4)
    first = ingestor.submit(data, source="photo.png", upload_id="alice-1")
    assert ingestor.submit(data, source="renamed.png", upload_id="alice-1").replayed
    other = ingestor.submit(data, source="photo.png", upload_id="bob-1")
    assert other.kind == "exact_duplicate" and other.duplicate_of == first.image_id and not other.replayed
    rows = store.read_table(schemas.FINGERPRINTS).to_pylist()
    assert [(r["source"], r["upload_id"]) for r in rows] == [("photo.png", "alice-1"), ("photo.png", "bob-1")]
    assert Ingestor(store, key, config).submit(data, source="x.png", upload_id="bob-1") == other


def test_a_mixed_batch_counts_each_upload_once_and_the_counts_add_up(tmp_path, test_data, key, config):
    photo = sorted((test_data / "dev").glob("*.jpg"))[0]
    image = Image.open(photo).convert("RGB")
    half = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(half, "JPEG", quality=60)
    store = Store(str(tmp_path / "store"))
    ingestor = Ingestor(store, key, config)
    known = ingestor.submit(noise_png(5), source="known.png")
    uploads = {"new.jpg": photo.read_bytes(), "half.jpg": half.getvalue(), "copy.png": noise_png(5),
               "known.png": noise_png(5), "corrupt.jpg": b"\xff\xd8\xff\xe0 truncated", "new-again.jpg": None}
    uploads["new-again.jpg"] = uploads["new.jpg"]
    names = list(uploads)
    names[-1] = "new.jpg"  # the same upload twice in one batch: the second is a replay
    decisions = ingestor.submit_batch([uploads[n] for n in names], sources=names)
    outcomes = [d.outcome for d in decisions]
    assert outcomes == ["stored", "duplicate", "exact_duplicate", "replayed", "error", "replayed"]
    assert decisions[2].duplicate_of == known.image_id and decisions[3] == known
    assert [d.source for d in decisions] == names  # each line names the upload given
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome in outcomes:
        counts[outcome] += 1
    assert summary_line(counts) == "6 uploads: 1 stored, 1 duplicate, 1 exact_duplicate, 2 replayed, 1 error"
    record = store.commit_record(store.latest_version())["meta"]
    assert (record["stored"], record["duplicates"], record["exact_duplicates"], record["errors"]) == (1, 1, 1, 1)
    assert len(store.read_table(schemas.FINGERPRINTS)) == 4


def test_the_cli_prints_the_new_uploads_path_and_a_summary_that_adds_up(tmp_path, key):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.png").write_bytes(noise_png(6))
    key_file = write_key_file(tmp_path / "group.key", key)
    args = ["ingest", str(folder), "--store", str(tmp_path / "store"), "--key", str(key_file)]
    command = [sys.executable, "-m", "imgdedup.jobs.cli", *args]
    first = subprocess.run(command, capture_output=True, timeout=120)
    assert ingest_finished(first.returncode, first.stderr, 0), first.stderr.decode()[-2000:]
    (folder / "b.png").write_bytes(noise_png(6))
    second = subprocess.run(command, capture_output=True, timeout=120)
    assert ingest_finished(second.returncode, second.stderr, 0), second.stderr.decode()[-2000:]
    lines = sorted(second.stdout.decode().splitlines())
    assert lines[0].startswith("exact_duplicate ") and lines[0].endswith("/b.png")
    assert lines[1].startswith("replayed stored ") and lines[1].endswith("/a.png")
    assert b"2 uploads: 0 stored, 0 duplicate, 1 exact_duplicate, 1 replayed, 0 error" in second.stderr
    assert SUMMARY_LOGGED in second.stderr  # the mark ingest_finished tells a finished process by


def test_bad_bytes_are_one_error_row(tmp_path, key, config):
    store = Store(str(tmp_path / "store"))
    decision = Ingestor(store, key, config).submit(b"not an image", source="junk.jpg")
    assert decision.kind == "error" and decision.message
    assert Ingestor(store, key, config).submit(b"not an image", source="junk.jpg").kind == "error"
    errors = store.read_table(schemas.ERRORS).to_pylist()
    assert [(e["source"], e["stage"]) for e in errors] == [("junk.jpg", "decode")]


def test_two_ingest_processes_at_once_decide_each_image_once(tmp_path, source, labelled, key):
    key_file = write_key_file(tmp_path / "group.key", key)
    store_url = str(tmp_path / "store")
    command = [sys.executable, "-m", "imgdedup.jobs.cli", "--set", "ingest.batch_size=4", "ingest", str(source),
               "--store", store_url, "--key", str(key_file)]
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for process in processes:
        stderr = process.communicate(timeout=120)[1]
        assert ingest_finished(process.returncode, stderr, 0), stderr.decode()[-2000:]
    store = Store(store_url)
    counts = rows_per_digest(store)
    assert len(counts) == len({data for data, _ in labelled.values()})
    # A racing pair of commits may both hold a digest; the first committed row is the decision.
    assert sum(counts.values()) - len(counts) <= 1
    for blob_id in store.iter_blob_ids():
        with store.open_blob_body(blob_id) as body:
            open_bytes(key, blob_id, store.read_blob_header(blob_id), body.read())
    version = store.latest_version()
    assert main(["--set", "ingest.batch_size=4", "ingest", str(source), "--store", store_url,
                 "--key", str(key_file)]) == 0
    assert Store(store_url).latest_version() == version


def test_drift_reclusters_and_duplicates_are_still_found(tmp_path, source, labelled, key, config):
    config = load_config(overrides=["ingest.recluster_new_classes=2", "dedup.clusters=3"])
    store = Store(str(tmp_path / "store"))
    ingestor = Ingestor(store, key, config)
    originals = sorted(name for name in labelled if name.endswith("/original.jpg"))
    ingestor.submit_batch([str(source / name) for name in originals])
    clusters = store.read_table(schemas.CLUSTERS)
    assert 1 <= clusters.num_rows <= 3
    assert any(r["replace"] == [schemas.CLUSTERS] for r in map(store.commit_record, range(1, store.latest_version() + 1)))
    rotated = ingestor.submit(str(source / originals[0].replace("original.jpg", "rot90.png")))
    assert rotated.kind == "duplicate"
    assert rotated.duplicate_of == Ingestor(store, key, config).submit(str(source / originals[0])).image_id


def test_watch_takes_a_file_once_its_size_is_stable(tmp_path, config):
    folder = tmp_path / "incoming"
    folder.mkdir()
    config = load_config(overrides=["ingest.stable_size_ms=2000", "ingest.poll_interval_ms=1000"])
    now = [0.0]
    growing = folder / "a.png"
    growing.write_bytes(noise_png(3)[:100])

    def sleep(seconds):
        now[0] += seconds
        if now[0] == 1.0:
            growing.write_bytes(noise_png(3))   # the copy finishes between polls

    polls = stable_files([str(folder)], config, clock=lambda: now[0], sleep=sleep)
    taken = []
    for _ in range(6):
        file = next(polls)
        while file is not None:
            taken.append((now[0], file.name))
            file = next(polls)
    assert taken == [(3.0, "a.png")]



def test_watch_ingests_files_as_they_arrive_until_sigterm(tmp_path, key):
    folder = tmp_path / "incoming"
    folder.mkdir()
    key_file = write_key_file(tmp_path / "group.key", key)
    store_url = str(tmp_path / "store")
    process = subprocess.Popen(
        [sys.executable, "-m", "imgdedup.jobs.cli", "--set", "ingest.poll_interval_ms=100", "--set", "ingest.stable_size_ms=300",
         "ingest", str(folder), "--store", store_url, "--key", str(key_file), "--watch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for count, name in enumerate(["a.png", "b.png"], start=1):
            (folder / name).write_bytes(noise_png(10 + count))
            deadline = time.monotonic() + 60
            while len(Store(store_url).read_table(schemas.FINGERPRINTS)) < count:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert ingest_finished(process.returncode, stderr, 0), stderr.decode()[-2000:]
    assert [line.split()[0] for line in stdout.decode().splitlines()] == ["stored", "stored"]


def test_ingest_continues_a_store_the_bulk_job_built(tmp_path, source, labelled, key, config):
    originals = sorted(name for name in labelled if name.endswith("/original.jpg"))
    bulk_source = tmp_path / "bulk"
    write_files(str(bulk_source), {name: labelled[name][0] for name in originals})
    store_url = str(tmp_path / "store")
    run_bulk(str(bulk_source), store_url, key, config)
    store = Store(store_url)
    version = store.latest_version()
    ingestor = Ingestor(store, key, config)
    assert all(d.kind == "stored" for d in ingestor.submit_batch(sorted(bulk_source.rglob("*.jpg"))))
    assert store.latest_version() == version  # every file is known by its digest
    canonical = {row["source"].split("/")[-2]: row["image_id"]
                 for row in store.read_table(schemas.FINGERPRINTS).to_pylist()}
    for name in (n for n in labelled if n.endswith("/rot90.png")):
        decision = ingestor.submit(str(source / name))
        assert decision.kind == "duplicate" and decision.duplicate_of == canonical[name.split("/")[0]]
    # The bulk job's files uploaded again under other names: a row each, pointing to the bulk canonicals.
    renamed = tmp_path / "renamed"
    write_files(str(renamed), {name.replace("/", "-"): labelled[name][0] for name in originals})
    before = len(store.read_table(schemas.FINGERPRINTS))
    copies = ingestor.submit_batch(sorted(renamed.iterdir()))
    assert [d.kind for d in copies] == ["exact_duplicate"] * len(originals)
    assert [d.duplicate_of for d in copies] == [canonical[n.split("/")[0]] for n in sorted(originals)]
    assert all(d.source.startswith(str(renamed)) for d in copies)
    assert len(store.read_table(schemas.FINGERPRINTS)) == before + len(originals)


POOL = [noise_png(20 + i, size=32) for i in range(4)] + [b"junk"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=4), min_size=1, max_size=4))
def test_any_submission_order_gives_one_decision_per_image(tmp_path_factory, batches):
    store = Store(str(tmp_path_factory.mktemp("store")))
    ingestor = Ingestor(store, GroupKey.generate(), load_config())
    first: dict[int, object] = {}
    for batch in batches:
        decisions = ingestor.submit_batch([POOL[i] for i in batch], sources=[f"pool-{i}" for i in batch])
        for i, decision in zip(batch, decisions):
            assert first.setdefault(i, decision) == decision
    assert set(rows_per_digest(store).values()) <= {1}
    assert len(store.read_table(schemas.FINGERPRINTS)) == len({i for b in batches for i in b} - {len(POOL) - 1})
    assert len(store.read_table(schemas.ERRORS)) == int(any(len(POOL) - 1 in b for b in batches))


def test_a_copy_of_a_near_duplicates_bytes_points_to_its_canonical_at_its_distance(tmp_path, test_data, key, config):
    photo = sorted((test_data / "dev").glob("*.jpg"))[1]
    image = Image.open(photo).convert("RGB")
    half = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(half, "JPEG", quality=60)
    ingestor = Ingestor(Store(str(tmp_path / "store")), key, config)
    original = ingestor.submit(str(photo))
    near = ingestor.submit(half.getvalue(), source="half.jpg")
    copy = ingestor.submit(half.getvalue(), source="half-again.jpg")
    assert near.kind == "duplicate" and near.duplicate_of == original.image_id
    assert (copy.kind, copy.duplicate_of, copy.distance) == ("duplicate", original.image_id, near.distance)
    # A fresh reader classifies the committed rows the same way.
    reread = Ingestor(Store(str(tmp_path / "store")), key, config)
    assert reread.submit(half.getvalue(), source="half-again.jpg") == copy
