"""A store writer for the race and crash tests, run in its own process.

``python writer.py SPEC_JSON`` writes one or more runs (blobs, then one Parquet
part of the ``errors`` table, then the commit) and prints one JSON line with the
versions it got, how many commit attempts it made and how many it won. SPEC_JSON keys: ``url``,
``options``, ``runs`` (list of ``{"run_id", "sources", "blobs"}``),
``blob_bytes``, and optionally ``kill_at`` (a step name: the process SIGKILLs
itself when the store reports that step) and ``barrier`` (``{"dir", "count"}``:
every writer waits at its first commit attempt until ``count`` writers are
there, so they all race for the same version).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

from imgdedup.pipeline.store import Store, schemas

BLOB_CHUNK_BYTES = 64 * 1024


def blob_body(blob_id: str, size: int) -> bytes:
    """Deterministic stand-in ciphertext for ``blob_id``."""
    return hashlib.shake_256(blob_id.encode()).digest(size) if size else b""


def blob_header(blob_id: str) -> bytes:
    return b"header:" + blob_id.encode()


def write_run(store: Store, run_id: str, sources: list[str], blob_ids: list[str], blob_bytes: int) -> int:
    """Write and commit one run the way a job does: skip it if committed, else write all, commit."""
    committed = store.committed_runs().get(run_id)
    if committed is not None:
        return committed
    for blob_id in blob_ids:
        body = blob_body(blob_id, blob_bytes)
        chunks = (body[i:i + BLOB_CHUNK_BYTES] for i in range(0, len(body), BLOB_CHUNK_BYTES))
        store.write_blob(blob_id, blob_header(blob_id), chunks)
    n = len(sources)
    rows = pa.table(
        {"source": sources, "stage": ["decode"] * n, "error_type": ["DecodeError"] * n,
         "message": ["m"] * n, "run_id": [run_id] * n},
        schema=schemas.errors_schema(),
    )
    part = store.write_table_part("errors", run_id, 0, rows)
    return store.commit(run_id, {"errors": [part]}, blob_ids, meta={"pid": os.getpid()})


def assert_holds_exactly(store: Store, runs: list[dict], blob_bytes: int) -> None:
    """The store's latest version holds the rows of ``runs`` once each, and exactly their blobs, intact."""
    sources = store.read_table("errors").column("source").to_pylist()
    assert Counter(sources) == Counter(s for run in runs for s in run["sources"])
    blob_ids = sorted(b for run in runs for b in run["blobs"])
    assert list(store.iter_blob_ids()) == blob_ids
    for blob_id in blob_ids:
        assert store.read_blob_header(blob_id) == blob_header(blob_id)
        with store.open_blob_body(blob_id) as f:
            assert f.read() == blob_body(blob_id, blob_bytes)


class StepObserver:
    """Counts commit attempts and wins; kills the process at one step; holds writers at a barrier."""

    def __init__(self, kill_at: str | None, barrier: dict | None):
        self.kill_at = kill_at
        self.barrier = barrier
        self.attempts = 0
        self.wins = 0

    def __call__(self, step: str) -> None:
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == "commit.done":
            self.wins += 1
        if step == "commit.begin":
            self.attempts += 1
            if self.attempts == 1 and self.barrier is not None:
                self._wait_for_everyone()

    def _wait_for_everyone(self) -> None:
        folder = Path(self.barrier["dir"])
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(folder.iterdir())) < self.barrier["count"]:
            if time.monotonic() > deadline:
                raise TimeoutError("writers did not all reach the barrier")
            time.sleep(0.01)


def main(spec: dict) -> dict:
    observer = StepObserver(spec.get("kill_at"), spec.get("barrier"))
    store = Store(spec["url"], spec["options"], on_step=observer)
    versions = {
        run["run_id"]: write_run(store, run["run_id"], run["sources"], run["blobs"], spec["blob_bytes"])
        for run in spec["runs"]
    }
    return {"versions": versions, "attempts": observer.attempts, "wins": observer.wins}


def run_in_processes(specs: list[dict], timeout: float = 120) -> list[tuple[int, dict | None, str]]:
    """Start one writer process per spec, all at once; ``(returncode, result, stderr)`` each."""
    processes = [
        subprocess.Popen([sys.executable, __file__, json.dumps(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for spec in specs
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        result = json.loads(out.decode().splitlines()[-1]) if process.returncode == 0 else None
        results.append((process.returncode, result, err.decode()))
    return results


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
    # The writer's work is done and reported; skip interpreter teardown, which
    # pyarrow's native thread pools can abort ("terminate called without an
    # active exception", apache/arrow#34314) and which is not under test here.
    os._exit(0)
