"""Hamming K-means time on 10^6 fingerprints, against float K-means steps in the same run.

    python scripts/bench_kmeans.py [--n 1000000] [--k 1024] [--seeds 1024] [--flips 8]

Data: ``n`` random 256-bit fingerprints (the hard case: no structure to find),
and ``n`` clustered ones, each a random member of ``--seeds`` random seeds with
``--flips`` bits flipped (real fingerprint sets cluster).

Timed, on each data set:

- ``hamming_kmeans`` with the ``[cluster]`` settings of ``conf/default.toml``
  (seeding on a sample, mini-batch steps, one assignment pass over all rows),
  and its parts: seeding alone, one assignment pass alone;
- reference: one Lloyd iteration of float32 K-means on the same bits unpacked
  to 0/1 vectors (BLAS ``sgemm`` distances to the centres, ``argmin``, centre
  means), what a float K-means library pays per iteration over the same data
  with the same ``k`` (one core's worth of BLAS per the machine's settings);
- reference: one nearest-centre pass with the byte-wise NumPy kernel
  ``pipeline.hashing.bits.hamming`` (timed on ``--reference-rows`` rows and
  scaled linearly to ``n``).

With ``--dask-workers N``, also ``jobs.cluster.distributed_kmeans`` on the
random set split into 100 partitions, on a local Dask cluster of N
single-threaded worker processes (checked equal to the in-memory result).

Quality: mean distance of a fingerprint to its centre (bits), empty classes;
on clustered data also the share of planted groups recovered exactly (all
members in one class that holds no other group's members) when ``--seeds``
equals ``k``. The last line is one JSON object; ``kmeans_seconds`` is the
time on random fingerprints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import hamming_kmeans, member_stats
from imgdedup.pipeline.cluster.seeding import seed_centres
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.hashing.bits import hamming

# Rows unpacked at a time by the reference Lloyd step (64 MiB of float32) and the data generator.
_FLOAT_ROWS = 65536


def _timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def clustered_fingerprints(rng: np.random.Generator, n: int, n_seeds: int, flips: int):
    """``(fingerprints (n, 32) uint8, group (n,) int)``: random seeds, ``flips`` bits flipped per row."""
    seeds = rng.integers(0, 256, (n_seeds, 32), dtype=np.uint8)
    group = rng.integers(0, n_seeds, n)
    fingerprints = np.empty((n, 32), dtype=np.uint8)
    for start in range(0, n, _FLOAT_ROWS):
        bits = np.unpackbits(seeds[group[start:start + _FLOAT_ROWS]], axis=1)
        # Distinct positions per row: the first `flips` of a random permutation of 256.
        positions = np.argsort(rng.random(bits.shape), axis=1)[:, :flips]
        np.put_along_axis(bits, positions, 1 - np.take_along_axis(bits, positions, axis=1), axis=1)
        fingerprints[start:start + len(bits)] = np.packbits(bits, axis=1)
    return fingerprints, group


def float_lloyd_step(fingerprints: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """One float32 Lloyd iteration on 0/1 vectors: nearest centre by sgemm, then centre means."""
    centre_bits = np.unpackbits(centres, axis=1).astype(np.float32)
    centre_norms = (centre_bits * centre_bits).sum(axis=1)
    labels = np.empty(len(fingerprints), dtype=np.int64)
    for start in range(0, len(fingerprints), _FLOAT_ROWS):
        rows = np.unpackbits(fingerprints[start:start + _FLOAT_ROWS], axis=1).astype(np.float32)
        # |x - c|² = |x|² - 2 x·c + |c|²; |x|² does not change the argmin.
        labels[start:start + len(rows)] = (centre_norms - 2.0 * (rows @ centre_bits.T)).argmin(axis=1)
    stats = member_stats(fingerprints, labels, len(centres))
    return stats.bit_counts / np.maximum(stats.sizes, 1)[:, None]


def bytewise_assign_seconds(fingerprints: np.ndarray, centres: np.ndarray, rows: int) -> float:
    """Seconds for one byte-wise NumPy nearest-centre pass over all rows, scaled from ``rows`` of them."""
    rows = min(rows, len(fingerprints))
    seconds, _ = _timed(lambda: hamming(fingerprints[:rows], centres).argmin(axis=1))
    return seconds * len(fingerprints) / rows


def recovered_groups(labels: np.ndarray, group: np.ndarray) -> float:
    """Share of groups whose members all share one class that no other group's member is in."""
    pairs = np.unique(np.stack([group, labels]), axis=1)
    groups_per_class = np.bincount(pairs[1])
    classes_per_group = np.bincount(pairs[0])
    whole = (classes_per_group[pairs[0]] == 1) & (groups_per_class[pairs[1]] == 1)
    return float(whole.sum()) / len(classes_per_group)


def bench(name: str, fingerprints: np.ndarray, k: int, settings: dict, reference_rows: int) -> dict:
    rng = np.random.default_rng(settings["seed"])
    sample = fingerprints[np.sort(rng.choice(len(fingerprints), min(settings["seed_sample_size"],
                                                                     len(fingerprints)), replace=False))]
    seed_s, _ = _timed(lambda: seed_centres(sample, k, np.random.default_rng(0), settings["seeding"]))
    kmeans_s, result = _timed(lambda: hamming_kmeans(fingerprints, k, **settings))
    assign_s, _ = _timed(lambda: assign(fingerprints, result.centres))
    lloyd_s, _ = _timed(lambda: float_lloyd_step(fingerprints, result.centres))
    bytewise_s = bytewise_assign_seconds(fingerprints, result.centres, reference_rows)
    n = len(fingerprints)
    print(f"[{name}] hamming_kmeans: {kmeans_s:7.2f} s  ({result.n_batches} batches; seeding alone "
          f"{seed_s:.2f} s, one assignment pass {assign_s:.2f} s)")
    print(f"[{name}] float32 Lloyd step (sgemm): {lloyd_s:7.2f} s;  byte-wise NumPy assignment pass: "
          f"{bytewise_s:7.2f} s (scaled from {min(reference_rows, n)} rows)")
    print(f"[{name}] mean distance to centre {result.inertia / n:.2f} bits; empty classes "
          f"{int((result.counts == 0).sum())}; class sizes {int(result.counts.min())}..{int(result.counts.max())}")
    return {
        "kmeans_seconds": round(kmeans_s, 2),
        "n_batches": result.n_batches,
        "seeding_seconds": round(seed_s, 2),
        "assign_pass_seconds": round(assign_s, 2),
        "float_lloyd_step_seconds": round(lloyd_s, 2),
        "bytewise_assign_pass_seconds": round(bytewise_s, 2),
        "kmeans_in_float_lloyd_steps": round(kmeans_s / lloyd_s, 2),
        "assign_speedup_vs_bytewise": round(bytewise_s / assign_s, 1),
        "mean_distance_bits": round(result.inertia / n, 2),
        "empty_classes": int((result.counts == 0).sum()),
        "labels": result.labels,
    }


def dask_seconds(fingerprints: np.ndarray, k: int, settings: dict, workers: int, labels: np.ndarray) -> float:
    """Seconds of ``distributed_kmeans`` over 100 scattered partitions (scatter not timed)."""
    from distributed import Client, LocalCluster

    from imgdedup.jobs.cluster import distributed_kmeans

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        partitions = client.scatter(np.array_split(fingerprints, 100))
        seconds, result = _timed(lambda: distributed_kmeans(partitions, k, **settings))
    if not np.array_equal(result.labels, labels):
        raise SystemExit("the Dask form disagrees with the in-memory form")
    print(f"[random] distributed_kmeans on {workers} local workers: {seconds:7.2f} s")
    return round(seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="fingerprints per data set")
    parser.add_argument("--k", type=int, default=1024, help="classes")
    parser.add_argument("--seeds", type=int, default=1024, help="planted groups in the clustered set")
    parser.add_argument("--flips", type=int, default=8, help="bits flipped per clustered fingerprint")
    parser.add_argument("--reference-rows", type=int, default=65536,
                        help="rows the byte-wise reference pass is timed on")
    parser.add_argument("--dask-workers", type=int, default=0,
                        help="also time the Dask form on a local cluster of this many workers (0: skip)")
    args = parser.parse_args()
    settings = dataclasses.asdict(load_config().cluster)
    rng = np.random.default_rng(2026)

    random_set = rng.integers(0, 256, (args.n, 32), dtype=np.uint8)
    random = bench("random", random_set, args.k, settings, args.reference_rows)
    if args.dask_workers:
        random["dask_kmeans_seconds"] = dask_seconds(random_set, args.k, settings, args.dask_workers,
                                                     random["labels"])
    del random_set
    clustered_set, group = clustered_fingerprints(rng, args.n, args.seeds, args.flips)
    clustered = bench("clustered", clustered_set, args.k, settings, args.reference_rows)
    recovered = recovered_groups(clustered.pop("labels"), group)
    random.pop("labels")
    print(f"[clustered] planted groups recovered exactly: {recovered:.3f} "
          f"({args.seeds} groups, {args.flips} bits flipped; ideal mean distance {args.flips})")
    print(json.dumps({
        **random,
        **{f"clustered_{name}": value for name, value in clustered.items()},
        "clustered_groups_recovered": round(recovered, 4),
        "n": args.n, "k": args.k, "bits": 256, "seeds": args.seeds, "flips": args.flips,
        **{f"cluster_{name}": value for name, value in settings.items()},
    }))


if __name__ == "__main__":
    main()
