"""Crash safety: a writer SIGKILLed at any step of a run leaves the last version whole.

For each step a run reports, a writer process kills itself right there (the
store calls its ``on_step`` observer as each step completes). The store must
then read back exactly its last committed version, and a re-run of the same run
must complete it with no duplicate rows; gc then removes the leftovers and
nothing else.
"""
from __future__ import annotations

import signal

import pytest

from imgdedup.pipeline.store import object_paths

from .conftest import new_location
from .writer import assert_holds_exactly, run_in_processes, write_run

BLOB_BYTES = 200_000  # several 64 KiB chunks, so a kill can land inside a body
BASE = {"run_id": "base", "sources": ["base/0", "base/1"], "blobs": ["base0001"]}
CRASHED = {"run_id": "run-2", "sources": ["run-2/0", "run-2/1", "run-2/2"], "blobs": ["r2blob01", "r2blob02"]}

STEPS = [
    "blob.body.begin", "blob.body.chunk", "blob.body.done", "blob.header.done",
    "part.begin", "part.chunk", "part.done",
    "commit.begin", "commit.record.written", "commit.done",
]


def commit_run(store, run: dict) -> int:
    return write_run(store, run["run_id"], run["sources"], run["blobs"], BLOB_BYTES)


def assert_store_holds(store, runs: list[dict]) -> None:
    """The latest version holds exactly ``runs``: their rows once each and their blobs intact."""
    assert store.latest_version() == len(runs)
    assert sorted(store.committed_runs()) == sorted(r["run_id"] for r in runs)
    assert_holds_exactly(store, runs, BLOB_BYTES)


def referenced_keys(store) -> list[str]:
    latest = store.latest_version()
    blob_keys = [k for b in store.iter_blob_ids() for k in (object_paths.blob_body_key(b), object_paths.blob_header_key(b))]
    return sorted([object_paths.commit_key(v) for v in range(1, latest + 1)] + store.committed_files("errors") + blob_keys)


@pytest.fixture(scope="module", params=["local", "s3"])
def crashed(request, tmp_path_factory) -> dict:
    """One store per step, each with a committed base run and a writer killed at that step."""
    locations = {step: new_location(request.param, request, tmp_path_factory.mktemp("crash")) for step in STEPS}
    for location in locations.values():
        commit_run(location.open(), BASE)
    specs = [
        {"url": loc.url, "options": loc.options, "runs": [CRASHED], "blob_bytes": BLOB_BYTES, "kill_at": step}
        for step, loc in locations.items()
    ]
    outcomes = run_in_processes(specs)
    return {step: (locations[step], returncode, stderr) for step, (returncode, _, stderr) in zip(STEPS, outcomes)}


@pytest.mark.parametrize("step", STEPS)
def test_writer_killed_at_a_step_leaves_last_version_whole_and_rerun_completes(crashed, step):
    location, returncode, stderr = crashed[step]
    assert returncode == -signal.SIGKILL, stderr
    store = location.open()
    # Only a kill after the commit record was published leaves the run committed.
    assert_store_holds(store, [BASE, CRASHED] if step == "commit.done" else [BASE])
    assert store.read_table("errors", version=1).num_rows == len(BASE["sources"])

    assert commit_run(location.open(), CRASHED) == 2
    assert commit_run(location.open(), CRASHED) == 2
    store = location.open()
    assert_store_holds(store, [BASE, CRASHED])

    store.gc(grace_seconds=0)
    assert sorted(p[len(store.root) + 1:] for p in store.fs.find(store.root)) == referenced_keys(store)
    assert_store_holds(location.open(), [BASE, CRASHED])
