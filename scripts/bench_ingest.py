"""Ingest decision latency against a large store: exact, paper and mih mode, and a brute-force scan.

    python scripts/bench_ingest.py [--n 1000000] [--queries 2000] [--k 1024] [--data clustered variants random]
                                   [--modes exact paper mih] [--set index.substring_bits=20 ...]

Measures what an upload costs once its fingerprint is computed: the decision
step of ``imgdedup ingest`` (``jobs.lookup.nearest_within`` over the
class index, then ``ClusterIndex.add`` for a stored image), one image at a
time, each query carrying its 8 dihedral forms as ingest sends them. The
reference is a NumPy brute-force scan of every stored fingerprint (64-bit
words, XOR and popcount, smallest over the 8 forms) in the same run; a second
one is the index's own compiled scan over every row (no pruning, on the same
``index.threads`` as exact mode), which shows what the triangle inequality adds
to the compiled kernel.

Data, 256-bit fingerprints:

``clustered``
    ``n`` fingerprints around ``k`` random seeds, each with 48 of its bits
    flipped (real fingerprint sets cluster; two members of one seed are ~78
    bits apart, like different photos, beyond t = 64).
``variants``
    ``n`` fingerprints around ``k`` seeds, each bit flipped with probability
    0.04 (~10 bits: every seed's rows are variants of one picture, within t of
    each other), the clustered set of ``scripts/bench_index.py``.
``random``
    ``n`` uniform random fingerprints (no structure: the worst case for the
    triangle-inequality pruning).

Classes: Hamming K-means (``[cluster]`` settings, k = ``--k``) on the data.

Queries: half are planted near-duplicates (a stored fingerprint with 0-24 bits
flipped, placed in a random dihedral slot, the other 7 forms random), half are
new images. Every planted query must be decided a duplicate of its source in
exact mode (recall 1.0, as brute force); paper and mih mode's recall is
reported (mih: ``index.substring_bits`` and ``index.probe_radius`` as
configured; a planted copy in a form other than the plain one is found when
one of its substrings is whole, guaranteed up to 15 bits at b = 16).

Last line: JSON with ``p99_ms`` (exact mode, clustered data when measured),
``speedup_vs_bruteforce`` (brute-force mean latency over exact-mode mean
latency, same data), ``speedup_vs_compiled_bruteforce`` and ``mih_vs_exact``
(exact-mode mean latency over mih mode's) per data set, and the per-mode,
per-data figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from imgdedup.jobs.lookup import nearest_within
from imgdedup.pipeline.cluster import hamming_kmeans
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.hamming import as_words, word_columns
from imgdedup.pipeline.index import ClusterIndex
from imgdedup.pipeline.index.kernels import scan_ranges

NBYTES = 32
FLIPS = 48
VARIANT_FLIP_P = 0.04


def flip_bits(rows: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies of ``rows`` (m, NBYTES) with ``counts[i]`` distinct random bits flipped in row i."""
    bits = np.unpackbits(rows, axis=1)
    order = np.argsort(rng.random(bits.shape), axis=1)
    flip = (np.arange(bits.shape[1])[None, :] < counts[:, None]).astype(np.uint8)
    bits[np.arange(len(rows))[:, None], order] ^= flip
    return np.packbits(bits, axis=1)


def make_data(kind: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` fingerprints of one of the three kinds of the module docstring."""
    if kind == "random":
        return rng.integers(0, 256, (n, NBYTES), dtype=np.uint8)
    seeds = rng.integers(0, 256, (k, NBYTES), dtype=np.uint8)
    out = np.empty((n, NBYTES), np.uint8)
    step = 1 << 16
    for start in range(0, n, step):
        owners = rng.integers(0, k, min(step, n - start))
        flips = (np.full(len(owners), FLIPS) if kind == "clustered"
                 else rng.binomial(8 * NBYTES, VARIANT_FLIP_P, len(owners)))
        out[start:start + len(owners)] = flip_bits(seeds[owners], flips, rng)
    return out


def make_queries(stored: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(count, 8, NBYTES) dihedral queries and, per query, the planted source row (-1 for a new image)."""
    queries = rng.integers(0, 256, (count, 8, NBYTES), dtype=np.uint8)
    planted = np.full(count, -1)
    half = count // 2
    planted[:half] = rng.choice(len(stored), half, replace=False)
    slots = rng.integers(0, 8, half)
    queries[np.arange(half), slots] = flip_bits(stored[planted[:half]], rng.integers(0, 25, half), rng)
    order = rng.permutation(count)
    return queries[order], planted[order]


def brute_force(words: np.ndarray, query: np.ndarray, t: int) -> int | None:
    """Row of the nearest stored fingerprint within ``t`` of any form, by scanning all of them."""
    best = None
    for form in as_words(query):
        distance = np.bitwise_count(words ^ form).sum(axis=1, dtype=np.uint16)
        best = distance if best is None else np.minimum(best, distance)
    row = int(best.argmin())
    return row if best[row] <= t else None


def compiled_brute_force(columns: np.ndarray, query: np.ndarray, t: int, threads: int) -> int | None:
    """:func:`brute_force` with the index's compiled scan of every row (columns: (w, n) words), on ``threads``."""
    _, rows, distances = scan_ranges(as_words(query)[None], columns, np.zeros(1, np.int64), np.zeros(1, np.int64),
                                     np.full(1, columns.shape[1]), t, threads=threads)
    return int(rows[distances.argmin()]) if len(rows) else None


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "decisions_per_s": round(1e3 / float(ms.mean()), 1)}


def run_index_mode(fingerprints, labels, centres, queries, planted, config, mode, overrides=()):
    ids = np.arange(len(fingerprints))
    index = ClusterIndex.build(fingerprints, ids, centres, labels)
    # The index at dedup.threshold_t whatever the store's size: the t rule (which lowers t for large stores) is off.
    mode_config = load_config(overrides=[*overrides, f"index.mode={mode}", "dedup.max_false_merge_rate=0"])
    t, N = config.dedup.threshold_t, config.dedup.centre_threshold
    nearest_within(index, queries[:1], mode_config)  # compiles or loads the index's kernels, untimed
    seconds, found = [], 0
    for i, query in enumerate(queries):
        started = time.perf_counter()
        match = nearest_within(index, query[None], mode_config)[0]
        if match is None:
            index.add(query[0], len(fingerprints) + i, centre_threshold=N)
        seconds.append(time.perf_counter() - started)
        if planted[i] >= 0 and match is not None and match[1] <= t:
            found += 1
    return percentiles(seconds) | {"planted_recall": round(found / max(1, int((planted >= 0).sum())), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--bruteforce-queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--data", nargs="+", choices=["clustered", "variants", "random"],
                        default=["clustered", "variants", "random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", choices=["exact", "paper", "mih"], default=["exact", "paper", "mih"],
                        help="index modes to time (the headline figures need exact)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every mode, e.g. index.substring_bits=20 (repeatable)")
    args = parser.parse_args()
    config = load_config(overrides=args.set)
    rng = np.random.default_rng(args.seed)
    summary: dict = {"n": args.n, "k": args.k, "t": config.dedup.threshold_t,
                     "N": config.dedup.centre_threshold, "dihedral_forms": 8}
    for kind in args.data:
        started = time.perf_counter()
        fingerprints = make_data(kind, args.n, args.k, rng)
        queries, planted = make_queries(fingerprints, args.queries, rng)
        result = hamming_kmeans(fingerprints, args.k, **dataclasses.asdict(config.cluster))
        print(f"[{kind}] {args.n} fingerprints, {args.k} classes built in {time.perf_counter() - started:.1f} s",
              flush=True)
        figures = {}
        for mode in args.modes:
            figures[mode] = run_index_mode(fingerprints, result.labels, result.centres, queries, planted,
                                           config, mode, args.set)
            print(f"[{kind}] {mode:>11}: {figures[mode]}", flush=True)
        words = as_words(fingerprints)
        seconds = []
        for query in queries[:args.bruteforce_queries]:
            started = time.perf_counter()
            brute_force(words, query, config.dedup.threshold_t)
            seconds.append(time.perf_counter() - started)
        figures["bruteforce"] = percentiles(seconds)
        print(f"[{kind}] {'brute force':>11}: {figures['bruteforce']}", flush=True)
        columns = word_columns(words)
        threads = config.index.scan_threads  # as exact mode's scans
        compiled_brute_force(columns, queries[0], config.dedup.threshold_t, threads)  # compiles or loads the kernel
        seconds = []
        for query in queries[:args.bruteforce_queries]:
            started = time.perf_counter()
            compiled_brute_force(columns, query, config.dedup.threshold_t, threads)
            seconds.append(time.perf_counter() - started)
        figures["compiled_bruteforce"] = percentiles(seconds)
        print(f"[{kind}] {'compiled brute force':>11}: {figures['compiled_bruteforce']}", flush=True)
        reference = "exact" if "exact" in figures else args.modes[0]
        figures["speedup_vs_bruteforce"] = round(figures["bruteforce"]["mean_ms"] / figures[reference]["mean_ms"], 1)
        figures["speedup_vs_compiled_bruteforce"] = round(
            figures["compiled_bruteforce"]["mean_ms"] / figures[reference]["mean_ms"], 2)
        if "exact" in figures and "mih" in figures:
            figures["mih_vs_exact"] = round(figures["exact"]["mean_ms"] / figures["mih"]["mean_ms"], 2)
        summary[kind] = figures
    headline = summary.get("clustered") or summary[args.data[0]]
    summary["p99_ms"] = headline[reference]["p99_ms"]
    summary["speedup_vs_bruteforce"] = headline["speedup_vs_bruteforce"]
    summary["overrides"] = args.set
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
