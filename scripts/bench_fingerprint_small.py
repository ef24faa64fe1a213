"""Per-image cost of the bulk job's partition task on small JPEGs, against ``imagehash.phash``, same run.

    python scripts/bench_fingerprint_small.py [--count 3000] [--partition-size 256]
                                              [--repeat 3] [--cache DIR] [--profile N]

Builds (or reuses, under ``--cache``) ``--count`` small JPEGs (160-320 pixels
wide, ``scripts/bench_bulk.py``'s mosaics of the ``../shared/data/dev`` photos),
then in this one process, best of ``--repeat`` passes over all of them:

- the whole task, :func:`imgdedup.jobs.bulk_task.fingerprint_partition` with the default
  configuration (read, keyed digest, decode, quality, LBPH with the 8 dihedral
  forms, tokens, sealed hashes, sealed blobs written to a fresh local store,
  Arrow rows), one partition of ``--partition-size`` files after another, with
  the task's own split of its time into stages and the CPU time of all its
  threads (the blob writers' system time included);
- the same task with every blob sealed but not handed to the store
  (``unstored``): what the task costs apart from the store's own writes
  (on a local store, file and folder creation, fsyncs, renames);
- :func:`imgdedup.pipeline.hashing.fingerprint.fingerprint_batch` alone over the files'
  bytes already in memory (decode, thumbnails, quality, hashes);
- ``imagehash.phash(Image.open(path))`` over the same files.

Times are microseconds per image; the ratios ``phash / x`` say how many times
faster than pHash each pass is (the bulk job aims at 2 for the whole job).
``--profile N`` also prints the N most expensive functions of one task pass
(cProfile, cumulative time). The last line printed is one JSON object.
"""
from __future__ import annotations

import os

# One BLAS thread, as on the bulk job's Dask workers (their nanny sets the same).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_bulk import generated_set  # noqa: E402 - a sibling script, not a package

from imgdedup.jobs import bulk_task  # noqa: E402
from imgdedup.jobs.bulk_task import PartitionSpec, fingerprint_partition  # noqa: E402
from imgdedup.jobs.source import SourceFile, image_extensions  # noqa: E402
from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.crypto.blob import seal_stream  # noqa: E402
from imgdedup.pipeline.crypto.group_key import GroupKey  # noqa: E402
from imgdedup.pipeline.hashing.algorithms import get_algorithm  # noqa: E402
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch  # noqa: E402
from imgdedup.pipeline.store import Store  # noqa: E402


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _seal_only(store: Store, spec: PartitionSpec, blob_id: str, data: bytes, digest: bytes) -> None:
    """The task's blob step without the store: seal every segment, write nothing."""
    header, body = seal_stream(spec.key, blob_id, io.BytesIO(data), spec.segment_bytes, content_digest=digest)
    for _ in body:
        pass


def task_pass(paths: list[Path], partition_size: int, key: GroupKey, *,
              store_blobs: bool = True) -> tuple[float, dict[str, float]]:
    """Seconds for every partition task over ``paths`` into a fresh store, and the tasks' summed stages.

    The stages include ``cpu``: CPU seconds of the whole process (every thread,
    user and system) while the tasks ran. ``store_blobs=False`` seals the blobs
    but does not write them.
    """
    config = load_config()
    stages = {"read": 0.0, "decode_hash": 0.0, "encrypt_write": 0.0}
    files = [SourceFile(p.as_uri(), p.name, p.stat().st_size, 0.0) for p in paths]
    unstored = nullcontext() if store_blobs else mock.patch.object(bulk_task, "seal_and_store", _seal_only)
    with tempfile.TemporaryDirectory() as folder, unstored:
        store_url = str(Path(folder) / "store")
        Store(store_url, {})  # created up front, as the job does before any task runs
        spec = PartitionSpec(
            store_url=store_url, storage_options={}, source_options={}, key=key, algo=config.hash.algo,
            size=config.hash.size, bits=config.hash.bits, dihedral=config.hash.dihedral,
            mode=config.crypto.mode, segment_bytes=config.crypto.segment_bytes,
            decode=dataclasses.asdict(config.decode), extensions=image_extensions(config.decode.formats),
            ingested_at=np.datetime64("2026-01-01T00:00:00", "us"), deferred_sync=True)
        started, cpu = time.perf_counter(), _cpu_seconds()
        for index, start in enumerate(range(0, len(files), partition_size)):
            result = fingerprint_partition(index, files[start:start + partition_size], {}, spec)
            if result.errors:
                raise RuntimeError(f"unexpected errors: {result.errors[:3]}")
            for stage, seconds in result.seconds.items():
                stages[stage] += seconds
        stages["cpu"] = _cpu_seconds() - cpu
        return time.perf_counter() - started, stages


def hash_pass(contents: list[bytes], partition_size: int) -> float:
    """Seconds for :func:`fingerprint_batch` over files already read, partition by partition."""
    config = load_config()
    algorithm = get_algorithm(config.hash.algo, size=config.hash.size, bits=config.hash.bits,
                              trim_borders=config.hash.trim_borders)
    started = time.perf_counter()
    for start in range(0, len(contents), partition_size):
        fingerprint_batch(contents[start:start + partition_size], algorithm, dihedral=config.hash.dihedral,
                          **dataclasses.asdict(config.decode))
    return time.perf_counter() - started


def phash_pass(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            imagehash.phash(image)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="small JPEGs")
    parser.add_argument("--partition-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the fastest counts")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "imgdedup-bench-small")
    parser.add_argument("--profile", type=int, default=0, help="print this many cProfile rows")
    args = parser.parse_args()

    paths = generated_set(args.cache / f"mosaic-small-{args.count}", args.count, 160, 320)
    contents = [p.read_bytes() for p in paths]
    key = GroupKey.generate()
    n = len(paths)
    per_image = lambda seconds: round(1e6 * seconds / n, 1)  # noqa: E731 - µs per image

    task_pass(paths[:64], args.partition_size, key)  # warm caches (tables, imports) before timing
    passes = {
        "task": lambda: task_pass(paths, args.partition_size, key),
        "task_unstored": lambda: task_pass(paths, args.partition_size, key, store_blobs=False),
        "fingerprint_batch": lambda: (hash_pass(contents, args.partition_size), None),
        "phash": lambda: (phash_pass(paths), None),
    }
    best, stages = {}, {}
    for _ in range(args.repeat):  # interleaved, so a busy spell on the machine hits every pass alike
        for name, run in passes.items():
            seconds, pass_stages = run()
            if seconds < best.get(name, float("inf")):
                best[name], stages[name] = seconds, pass_stages

    results = {f"{name}_us_per_image": per_image(seconds) for name, seconds in best.items()}
    for name in ("task", "task_unstored"):
        results.update({f"{name}_{stage}_us_per_image": per_image(seconds) for stage, seconds in stages[name].items()})
    for name in ("task", "task_unstored", "fingerprint_batch"):
        results[f"phash_over_{name}"] = round(best["phash"] / best[name], 3)
    results.update(images=n, partition_size=args.partition_size, repeat=args.repeat)
    print(f"{'µs/image':>18} {'total':>8} {'read':>8} {'dec+hash':>8} {'enc+wr':>8} {'cpu':>8} {'phash/x':>8}")
    for name in passes:
        split = stages[name] or {}
        cells = [f"{per_image(split[stage]):8.1f}" if stage in split else f"{'':8}"
                 for stage in ("read", "decode_hash", "encrypt_write", "cpu")]
        ratio = f"{results[f'phash_over_{name}']:8.3f}" if name != "phash" else f"{'':8}"
        print(f"{name:>18} {per_image(best[name]):8.1f} {' '.join(cells)} {ratio}")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(task_pass, paths, args.partition_size, key)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(args.profile)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
