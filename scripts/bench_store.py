"""Store throughput: blob writes and reads against plain files, commits per second.

    python scripts/bench_store.py [--mib 64] [--rounds 3] [--runs 200] [--url DIR]

On a local store in a temporary folder (or ``--url``), interleaved round by round:

- blob write: ``write_blob`` of ``--mib`` MiB in 1 MiB chunks (temporary file,
  rename, header), then the filesystem flush a commit does before its record
  (what makes the blob durable), against the reference: the same chunks
  written to a plain file and fsynced (the least a durable write does);
- blob read: ``open_blob_body`` read in 1 MiB chunks against a plain file read.

Then ``--runs`` runs of one small Parquet part each are committed one after
another; commits/s is reported for the first and the last tenth, since every
commit lists the growing ``_commits/`` folder. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from imgdedup.pipeline.store import Store, schemas
from imgdedup.pipeline.store.backend import flush_filesystem, open_flush_handle

CHUNK = 1 << 20


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _plain_write(path: Path, chunks: list[bytes]) -> None:
    with path.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def _drain(f) -> None:
    with f:
        while f.read(CHUNK):
            pass


def _commit_rate(store: Store, runs: int) -> tuple[float, float]:
    rows = pa.table({"source": ["s"], "stage": ["decode"], "error_type": ["E"], "message": ["m"], "run_id": ["r"]},
                    schema=schemas.errors_schema())
    durations = []
    for n in range(runs):
        run_id = f"bench-{n:06d}"
        durations.append(_timed(lambda: store.commit(run_id, {"errors": [store.write_table_part("errors", run_id, 0, rows)]})))
    tenth = max(1, runs // 10)
    return tenth / sum(durations[:tenth]), tenth / sum(durations[-tenth:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--url", help="store URL (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.url or str(Path(tmp) / "store"))
        handle = open_flush_handle(store.fs, store.root)
        chunks = [os.urandom(CHUNK) for _ in range(args.mib)]
        plain = Path(tmp) / "plain"
        timings = {"blob_write": [], "plain_write": [], "blob_read": [], "plain_read": []}
        for round_ in range(args.rounds):
            blob_id = f"bench{round_:04d}"
            timings["blob_write"].append(_timed(lambda: (store.write_blob(blob_id, b"header", iter(chunks)),
                                                         flush_filesystem(handle))))
            timings["plain_write"].append(_timed(lambda: _plain_write(plain, chunks)))
            timings["blob_read"].append(_timed(lambda: _drain(store.open_blob_body(blob_id))))
            timings["plain_read"].append(_timed(lambda: _drain(plain.open("rb"))))
        best = {name: min(values) for name, values in timings.items()}
        first, last = _commit_rate(store, args.runs)

    result = {
        "mib": args.mib,
        "blob_write_mib_s": round(args.mib / best["blob_write"], 1),
        "plain_write_mib_s": round(args.mib / best["plain_write"], 1),
        "blob_write_vs_plain": round(best["plain_write"] / best["blob_write"], 3),
        "blob_read_mib_s": round(args.mib / best["blob_read"], 1),
        "blob_read_vs_plain": round(best["plain_read"] / best["blob_read"], 3),
        "runs": args.runs,
        "commits_per_s_first_tenth": round(first, 1),
        "commits_per_s_last_tenth": round(last, 1),
    }
    for name, value in result.items():
        print(f"{name:>28}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
