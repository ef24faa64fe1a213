"""Store throughput: blob writes and reads against plain files, commits per second, a 10^4-blob commit on S3.

    python scripts/bench_store.py [--mib 64] [--rounds 3] [--runs 200] [--url DIR] [--blobs 10000] [--skip-s3]

On a local store in a temporary folder (or ``--url``), interleaved round by round:

- blob write: ``write_blob`` of ``--mib`` MiB in 1 MiB chunks (temporary file,
  rename, header), then the filesystem flush a commit does before its record
  (what makes the blob durable), against the reference: the same chunks
  written to a plain file and fsynced (the least a durable write does);
- blob read: ``open_blob_body`` read in 1 MiB chunks against a plain file read.

Then ``--runs`` runs of one small Parquet part each are committed one after
another; commits/s is reported for the first and the last tenth, since every
commit lists the growing ``_commits/`` folder.

Then a bulk run's commit of ``--blobs`` blobs (1 KiB each) on an S3 server
(moto's, started on loopback as the tests start it: one request at a time)
and, in the same run, on a local folder: the blobs are written by one
``Store`` (as the bulk job's workers write them, 8 threads), then a fresh
``Store`` (the client) commits them with one Parquet part; the commit checks
that every listed blob is present (two existence checks per blob written by
another process, 32 at a time). Seconds of the writes and of the commit, and,
on S3, the HTTP requests the server answered per blob (from its request log).
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from imgdedup.pipeline.store import Store, schemas
from imgdedup.pipeline.store.backend import flush_filesystem, open_flush_handle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.store import s3_server  # noqa: E402  (the tests' S3 server)

CHUNK = 1 << 20
BUCKET = "imgdedup-bench"
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
        part = store.write_table_part("errors", run_id, 0, rows)
        durations.append(_timed(lambda: store.commit(run_id, {"errors": [part]})))
    tenth = max(1, runs // 10)
    return tenth / sum(durations[:tenth]), tenth / sum(durations[-tenth:])


def _requests(log: Path) -> int:
    """HTTP requests the S3 server has logged so far."""
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '" 20' in line or '" 40' in line)


def _bulk_commit(url: str, options: dict, blobs: int, log: Path | None) -> dict:
    """Write ``blobs`` blobs with one Store, commit them with another; seconds and requests per blob."""
    writer = Store(url, options)
    ids = [f"{k:032x}" for k in range(blobs)]
    body = os.urandom(1024)
    before = _requests(log) if log else 0
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda blob_id: writer.write_blob(blob_id, b"header", [body]), ids))
    write_seconds = time.perf_counter() - started
    after_writes = _requests(log) if log else 0
    client = Store(url, options)
    rows = pa.table({"source": ["s"], "stage": ["decode"], "error_type": ["E"], "message": ["m"], "run_id": ["r"]},
                    schema=schemas.errors_schema())
    part = client.write_table_part("errors", "bulk-bench", 0, rows)
    started = time.perf_counter()
    client.commit("bulk-bench", {"errors": [part]}, ids)
    commit_seconds = time.perf_counter() - started
    figures = {"write_seconds": round(write_seconds, 2), "commit_seconds": round(commit_seconds, 2)}
    if log:
        figures["write_requests_per_blob"] = round((after_writes - before) / blobs, 2)
        figures["commit_requests_per_blob"] = round((_requests(log) - after_writes) / blobs, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--url", help="store URL (default: a temporary folder)")
    parser.add_argument("--blobs", type=int, default=10_000, help="blobs of the bulk commit on S3 and locally")
    parser.add_argument("--skip-s3", action="store_true")
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
        bulk = {"local": _bulk_commit(str(Path(tmp) / "bulk"), {}, args.blobs, None)}
        print(f"local: {args.blobs} blobs: {bulk['local']}, load {os.getloadavg()[0]:.1f}", flush=True)
        if not args.skip_s3:
            try:
                server = s3_server.start(Path(tmp), BUCKET)
            except RuntimeError as exc:
                raise SystemExit(str(exc)) from None
            try:
                bulk["s3"] = _bulk_commit(f"s3://{BUCKET}/bulk", server.storage_options(), args.blobs, server.log)
                print(f"s3 (moto): {args.blobs} blobs: {bulk['s3']}, load {os.getloadavg()[0]:.1f}", flush=True)
            finally:
                server.stop()

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
        "bulk_commit_blobs": args.blobs,
        **{f"{backend}_{name}": value for backend, figures in bulk.items() for name, value in figures.items()},
    }
    if "s3" in bulk:
        result["s3_commit_vs_local"] = round(bulk["s3"]["commit_seconds"] / bulk["local"]["commit_seconds"], 1)
    for name, value in result.items():
        print(f"{name:>28}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
