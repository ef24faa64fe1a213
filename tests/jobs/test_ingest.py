"""Ingest: the upload protocol, one decision per content digest, agreement with the bulk job."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs.ingest import Ingestor, stable_files
from imgdedup.jobs.cli import main
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.blob import open_bytes
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store, schemas
from tests.jobs.bulk_sets import groups_by_name, labelled_set, write_files
from tests.jobs.ingest_images import ingest_finished, noise_png, rows_per_digest


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


def test_same_bytes_under_two_names_get_one_decision(tmp_path, key, config):
    store = Store(str(tmp_path / "store"))
    ingestor = Ingestor(store, key, config)
    data = noise_png(2)
    first = ingestor.submit(data, source="a.png")
    assert ingestor.submit(data, source="b.png") == first
    assert ingestor.submit_batch([data, data]) == [first, first]
    assert len(store.read_table(schemas.FINGERPRINTS)) == 1


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
