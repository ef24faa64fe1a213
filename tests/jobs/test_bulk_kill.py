"""`imgdedup bulk` under failure: a Dask worker killed mid-stage, the whole job SIGKILLed and run again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from imgdedup.jobs.bulk import run_bulk
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store
from tests.jobs.bulk_sets import labelled_set, write_files

REPO = Path(__file__).resolve().parents[2]
KEY = GroupKey(bytes(range(1, 33)))


@pytest.fixture(scope="module")
def source(test_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("source")
    files = {name: data for name, (data, _) in labelled_set(test_data / "dev", 6).items()}
    write_files(str(folder), files)
    return folder, files


def _check_store_holds_each_file_once(store: Store, files: dict) -> None:
    rows = store.read_table("fingerprints").to_pylist()
    assert sorted(r["source"].rsplit("/", 2)[-2] + "/" + r["source"].rsplit("/", 1)[-1] for r in rows) == sorted(files)
    assert len({r["image_id"] for r in rows}) == len(rows)
    canonical = {r["image_id"] for r in rows if r["duplicate_of"] is None}
    kept = set(store.commit_record(store.latest_version())["meta"]["pointer_blobs"])
    assert set(store.iter_blob_ids()) == canonical | kept


def test_a_worker_killed_while_fingerprinting_loses_and_doubles_no_row(source, tmp_path):
    folder, files = source
    store_url = str(tmp_path / "store")
    config = load_config(overrides=["dask.partition_size=2", "dedup.clusters=4"])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids_before = set(client.run(os.getpid).values())
        outcome = {}
        job = threading.Thread(target=lambda: outcome.update(summary=run_bulk(str(folder), store_url, KEY, config,
                                                                              client=client)))
        job.start()
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline and job.is_alive():
            busy = [addr for addr, keys in client.processing().items()
                    if any(str(k).startswith("fingerprint-") for k in keys)]
            if busy:
                killed = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.005)
        job.join(timeout=120)
        assert killed is not None, "no fingerprint task was seen running"
        assert killed in pids_before and killed not in set(client.run(os.getpid).values())
    summary = outcome["summary"]
    assert summary["images"] == len(files) and summary["errors"] == 0
    _check_store_holds_each_file_once(Store(store_url), files)


def _bulk_command(folder: Path, store_dir: Path, key_file: Path) -> list[str]:
    return [sys.executable, "-m", "imgdedup.jobs.cli", "--set", "dask.partition_size=2", "--set", "dask.workers=2",
            "--set", "dedup.clusters=4", "bulk", str(folder), "--store", str(store_dir), "--key", str(key_file)]


def test_sigkill_of_the_whole_job_then_a_rerun_commits_every_file_once(source, tmp_path):
    folder, files = source
    store_dir, key_file = tmp_path / "store", tmp_path / "group.key"
    write_key_file(key_file, KEY)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(tmp_path / "killed.log", "wb") as log:
        # Its own session, so the kill reaches the Dask workers it started too.
        job = subprocess.Popen(_bulk_command(folder, store_dir, key_file), cwd=REPO, env=env,
                               stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:
            if (store_dir / "blobs").is_dir() and any(p.is_file() for p in (store_dir / "blobs").rglob("*")):
                break
            time.sleep(0.01)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert job.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert Store(str(store_dir)).latest_version() == 0  # killed mid-fingerprinting: nothing visible

    rerun = subprocess.run(_bulk_command(folder, store_dir, key_file), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"images {len(files)}," in rerun.stdout
    store = Store(str(store_dir))
    assert store.latest_version() == 1
    _check_store_holds_each_file_once(store, files)
