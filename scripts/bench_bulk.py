"""Throughput and memory of ``imgdedup bulk`` against ``imagehash.phash``, same files, same run.

    python scripts/bench_bulk.py [--large 10000] [--small 100000] [--partition-size 256]
                                 [--workers 0] [--phash-sample 1000] [--cache DIR]

Builds (or reuses, under ``--cache``) two generated sets made from the photos in
``../shared/data/dev``: ``--large`` real-looking JPEGs of ~1-2 megapixels (a
mosaic of random crops of four photos, scaled up, a little recoloured, JPEG
quality 70-95) and ``--small`` small ones (the same, 160-320 pixels wide). Then, for each set:

- the whole bulk job on a local Dask cluster (``--workers`` processes, one thread
  each) into a fresh local store, with images/s for the job and per stage
  (decode+hash and encrypt+write from the workers' summed task time divided by
  the number of workers; cluster and dedup from the client's wall time);
- the peak resident memory of the client and of the largest worker, sampled
  every 50 ms;
- ``imagehash.phash(Image.open(path))`` in this one process over a sample of
  ``--phash-sample`` of the same files, as images/s.

A third run of the small set's first tenth shows whether peak memory follows the
partition size (same) or the number of images (ten times fewer). On a shared or
busy machine the numbers move between runs; the ratios are measured in one run.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import imagehash
import psutil
from distributed import Client, LocalCluster
from PIL import Image, ImageEnhance

from imgdedup.jobs.bulk import run_bulk
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "dev"


def _make_file(task: tuple[list[Path], Path, int, int, int]) -> None:
    """One JPEG: a 2x2 mosaic of random crops of random photos, scaled, recoloured, re-encoded.

    Mosaics of four of the 20 dev photos make files that are mostly different
    pictures (as in a real collection), where crops of one photo would all be
    near-duplicates of each other.
    """
    photos, out, seed, min_width, max_width = task
    rng = random.Random(seed)
    tile_w, tile_h = 160, 120
    mosaic = Image.new("RGB", (2 * tile_w, 2 * tile_h))
    for k in range(4):
        photo = Image.open(rng.choice(photos)).convert("RGB")
        width = rng.randint(photo.width // 3, photo.width)
        height = min(photo.height, width * 3 // 4)
        left, top = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
        tile = photo.crop((left, top, left + width, top + height)).resize((tile_w, tile_h))
        if rng.random() < 0.5:
            tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        mosaic.paste(tile, ((k % 2) * tile_w, (k // 2) * tile_h))
    target = rng.randint(min_width, max_width)
    mosaic = mosaic.resize((target, target * 3 // 4), Image.Resampling.BICUBIC)
    mosaic = ImageEnhance.Color(mosaic).enhance(rng.uniform(0.8, 1.2))
    mosaic.save(out, "JPEG", quality=rng.randint(70, 95))


def generated_set(folder: Path, count: int, min_width: int, max_width: int) -> list[Path]:
    """``count`` JPEGs in ``folder`` (kept between runs), made from the dev photos."""
    photos = sorted(DEV.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{k // 1000:03d}" / f"img{k:06d}.jpg" for k in range(count)]
    missing = [(photos, p, k, min_width, max_width) for k, p in enumerate(paths) if not p.exists()]
    for sub in {p.parent for p in paths}:
        sub.mkdir(exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_make_file, missing, chunksize=64))
    return paths


class PeakMemory:
    """Samples the resident memory of this process and of the cluster's worker processes."""

    def __init__(self, worker_pids: list[int]):
        self.processes = [psutil.Process()] + [psutil.Process(p) for p in worker_pids]
        self.client_peak = self.worker_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            rss = []
            for process in self.processes:
                try:
                    rss.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    rss.append(0)
            self.client_peak = max(self.client_peak, rss[0])
            self.worker_peak = max([self.worker_peak, *rss[1:]])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def phash_rate(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            imagehash.phash(image)
    return len(paths) / (time.perf_counter() - started)


def run_job(client: Client, source: Path, partition_size: int, workers: int) -> dict:
    config = load_config(overrides=[f"dask.partition_size={partition_size}", 'dedup.clusters="auto"'])
    with tempfile.TemporaryDirectory() as store:
        pids = list(client.run(os.getpid).values())
        with PeakMemory(pids) as memory:
            started = time.perf_counter()
            summary = run_bulk(str(source), store, GroupKey.generate(), config, client=client)
            seconds = time.perf_counter() - started
    n = summary["images"]
    return {
        "images": int(n), "errors": int(summary["errors"]), "duplicates": int(summary["duplicates"]),
        "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1),
        "decode_hash_per_s": round(n / (summary["worker_seconds_decode_hash"] / workers), 1),
        "encrypt_write_per_s": round(n / (summary["worker_seconds_encrypt_write"] / workers), 1),
        "read_per_s": round(n / (summary["worker_seconds_read"] / workers), 1),
        "cluster_per_s": round(n / max(summary["seconds_cluster"], 1e-9), 1),
        "dedup_per_s": round(n / max(summary["seconds_dedup"], 1e-9), 1),
        "peak_rss_client_mb": round(memory.client_peak / 2**20, 1),
        "peak_rss_worker_mb": round(memory.worker_peak / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", type=int, default=10_000, help="~1-2 MP JPEGs")
    parser.add_argument("--small", type=int, default=100_000, help="small JPEGs")
    parser.add_argument("--partition-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--phash-sample", type=int, default=1000, help="files timed with imagehash.phash")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "imgdedup-bench-bulk")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1

    sets = {
        "large": generated_set(args.cache / f"mosaic-large-{args.large}", args.large, 1200, 1700),
        "small": generated_set(args.cache / f"mosaic-small-{args.small}", args.small, 160, 320),
    }
    tenth = args.cache / f"mosaic-small-{args.small}" / "000"  # the first 1000 small files
    results = {}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for name, paths in sets.items():
            job = run_job(client, paths[0].parent.parent, args.partition_size, workers)
            job["phash_per_s"] = round(phash_rate(paths[:: max(1, len(paths) // args.phash_sample)]), 1)
            job["job_vs_phash"] = round(job["images_per_s"] / job["phash_per_s"], 2)
            results[name] = job
            print(f"{name}: {json.dumps(job)}", flush=True)
        few = run_job(client, tenth, args.partition_size, workers)
        print(f"small, first {few['images']} files: {json.dumps(few)}", flush=True)
    results["memory_ratio_small_all_vs_first_1000"] = round(
        results["small"]["peak_rss_worker_mb"] / few["peak_rss_worker_mb"], 2)
    results["client_memory_ratio_small_all_vs_first_1000"] = round(
        results["small"]["peak_rss_client_mb"] / few["peak_rss_client_mb"], 2)
    results.update(workers=workers, partition_size=args.partition_size, cpus=os.cpu_count())
    print(json.dumps(results))


if __name__ == "__main__":
    main()
