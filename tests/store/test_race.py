"""Racing writers: exactly one wins each version, the others retry, nothing is lost or doubled."""
from __future__ import annotations

import threading
import traceback
from collections import Counter

import pytest

from .conftest import new_location
from .writer import assert_holds_exactly, run_in_processes, write_run

WRITERS = 5
RUNS_PER_WRITER = 3
BLOB_BYTES = 1000


def writer_runs(worker: int) -> list[dict]:
    """Runs of one writer; writers 0 and 1 both also commit the run ``shared`` first."""
    runs = [
        {"run_id": f"w{worker}-r{j}", "sources": [f"w{worker}-r{j}/{k}" for k in range(2)], "blobs": [f"w{worker}r{j}"]}
        for j in range(RUNS_PER_WRITER)
    ]
    if worker < 2:
        runs.insert(0, {"run_id": "shared", "sources": [f"shared-w{worker}/{k}" for k in range(2)],
                        "blobs": [f"shared{worker}"]})
    return runs


def check_race_outcome(store, results: list[dict]) -> None:
    latest = store.latest_version()
    records = [store.commit_record(v) for v in range(1, latest + 1)]
    # One record per version (the log is contiguous) and one version per run id.
    assert Counter(r["run_id"] for r in records) == Counter({r["run_id"]: 1 for r in records})
    assert latest == 1 + WRITERS * RUNS_PER_WRITER
    committed = store.committed_runs()
    for result in results:
        for run_id, version in result["versions"].items():
            assert committed[run_id] == version
    assert results[0]["versions"]["shared"] == results[1]["versions"]["shared"]
    # Each version was won by exactly one attempt: no two writers both believed they won.
    assert sum(r["wins"] for r in results) == latest
    # All writers were held until each had read version 0, so all raced for version 1:
    # one attempt won it and every other writer lost at least once, then retried.
    losses = sum(r["attempts"] - r["wins"] for r in results)
    assert losses >= WRITERS - 1

    shared_record = records[committed["shared"] - 1]
    (shared_winner,) = [w for w in (0, 1) if shared_record["blobs"] == [f"shared{w}"]]
    expected_runs = [run for w in range(WRITERS) for run in writer_runs(w)
                     if run["run_id"] != "shared" or run["blobs"] == [f"shared{shared_winner}"]]
    assert_holds_exactly(store, expected_runs, BLOB_BYTES)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_racing_writer_processes(backend, request, tmp_path):
    location = new_location(backend, request, tmp_path)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    specs = [
        {"url": location.url, "options": location.options, "runs": writer_runs(w), "blob_bytes": BLOB_BYTES,
         "barrier": {"dir": str(barrier), "count": WRITERS}}
        for w in range(WRITERS)
    ]
    outcomes = run_in_processes(specs)
    for returncode, _, stderr in outcomes:
        assert returncode == 0, stderr
    check_race_outcome(location.open(), [result for _, result, _ in outcomes])


def test_racing_writer_threads_on_memory(request, tmp_path):
    location = new_location("memory", request, tmp_path)
    barrier = threading.Barrier(WRITERS, timeout=60)
    results: list[dict] = [{} for _ in range(WRITERS)]
    errors: list[str] = []

    def writer(worker: int) -> None:
        attempts = wins = 0

        def on_step(step: str) -> None:
            nonlocal attempts, wins
            wins += step == "commit.done"
            if step == "commit.begin":
                attempts += 1
                if attempts == 1:
                    barrier.wait()
        store = location.open(on_step=on_step)
        try:
            versions = {run["run_id"]: write_run(store, run["run_id"], run["sources"], run["blobs"], BLOB_BYTES)
                        for run in writer_runs(worker)}
        except BaseException as exc:  # reported to the test thread below, with where it was raised
            errors.append("".join(traceback.format_exception(exc)))
            barrier.abort()
            return
        results[worker] = {"versions": versions, "attempts": attempts, "wins": wins}

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    check_race_outcome(location.open(), results)
