"""Cluster index search speed and recall against brute force and FAISS binary indexes.

    python scripts/bench_index.py [--n 1000000] [--k 1024] [--t 64] [--queries 500]
                                  [--reference-queries 100] [--seeds 1000] [--seed 0] [--repeats 3]

Two sets of ``--n`` 256-bit fingerprints:

- ``random``: uniformly random rows (the hard case for pruning: every row is
  about 128 bits from every other, so class radii are large);
- ``clustered``: ``--seeds`` random seed rows, each fingerprint a seed with each
  bit flipped with probability 0.04 (about 10 bits), as real fingerprint sets
  group around their originals.

Into each, ``--queries`` planted near-duplicates: a query is a stored row with
0..48 of its bits flipped, so its stored original lies within ``--t``. Hamming
K-means (``k = --k``, pipeline.cluster.hamming_kmeans, timed) gives the classes.
For every method: queries per second, recall of the planted originals and recall
of every stored row within ``t`` (what brute force returns):

- exact mode and paper mode of :class:`pipeline.index.ClusterIndex` (paper mode
  searches the nearest class whatever its distance: its best recall);
- NumPy brute force (word-wise XOR + popcount of each query against all rows);
- FAISS ``IndexBinaryFlat`` and ``IndexBinaryIVF`` range search (radius t + 1,
  FAISS keeps distances below the radius) over the same K-means centres, with
  ``nprobe`` the smallest power of two whose planted recall equals exact mode's
  (``exact_vs_faiss_ivf``), and again whose recall of every match equals exact
  mode's (``exact_vs_faiss_ivf_all_matches``). FAISS returns its matches
  unsorted; the index sorts each query's matches by distance.

FAISS runs on one thread, as NumPy does. Each method runs ``--repeats`` times
and its fastest run counts (the machine may be shared). The flat index runs on the first
``--reference-queries`` queries. The last line is one JSON object:
the top-level keys are the random set's, ``clustered_*`` the clustered set's.
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from pipeline.cluster import hamming_kmeans
from pipeline.index import ClusterIndex
from pipeline.index.kernels import as_words, dense_distances

NBYTES = 32
PLANTED_MAX_BITS = 48


def flip(rows: np.ndarray, flips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies of ``rows`` with ``flips[i]`` distinct random bits of row i flipped."""
    bits = np.unpackbits(rows, axis=1)
    order = np.argsort(rng.random(bits.shape), axis=1)
    bits ^= (np.argsort(order, axis=1) < flips[:, None]).astype(np.uint8)
    return np.packbits(bits, axis=1)


def make_set(kind: str, n: int, seeds: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.integers(0, 256, (n, NBYTES), dtype=np.uint8)
    centre = rng.integers(0, 256, (seeds, NBYTES), dtype=np.uint8)
    out = np.empty((n, NBYTES), dtype=np.uint8)
    for start in range(0, n, 1 << 17):
        rows = centre[rng.integers(0, seeds, min(1 << 17, n - start))]
        bits = np.unpackbits(rows, axis=1) ^ (rng.random((len(rows), NBYTES * 8)) < 0.04)
        out[start:start + len(rows)] = np.packbits(bits, axis=1)
    return out


def brute_force(words: np.ndarray, queries: np.ndarray, t: int) -> list[np.ndarray]:
    """Row indices within t of each query, by scanning every row."""
    found = []
    for q in as_words(queries)[:, None]:
        low = dense_distances(q[None], words)[0]
        found.append(np.flatnonzero(low <= t))
    return found


def timed(run, repeats: int = 1):
    """(result, best wall time in seconds over ``repeats`` runs)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return out, best


def recalls(found: list, planted: np.ndarray, truth: list[np.ndarray]) -> tuple[float, float]:
    """(share of queries whose planted original was found, share of all true matches found)."""
    hit = np.mean([p in set(f) for p, f in zip(planted, found)])
    total = sum(len(x) for x in truth)
    kept = sum(len(np.intersect1d(np.asarray(f, dtype=np.int64), x)) for f, x in zip(found, truth))
    return float(hit), kept / total if total else 1.0


def faiss_range(index, queries: np.ndarray, t: int) -> list[np.ndarray]:
    lims, _, labels = index.range_search(queries, t + 1)
    return [labels[lims[i]:lims[i + 1]] for i in range(len(queries))]


def bench_set(kind: str, args, rng: np.random.Generator) -> dict:
    stored = make_set(kind, args.n, args.seeds, rng)
    planted = rng.choice(args.n, args.queries, replace=False)
    queries = flip(stored[planted], rng.integers(0, PLANTED_MAX_BITS + 1, args.queries), rng)
    result, kmeans_seconds = timed(lambda: hamming_kmeans(stored, args.k, seed=args.seed))
    index, build_seconds = timed(lambda: ClusterIndex.build(stored, np.arange(args.n), result.centres, result.labels))
    words = as_words(stored)
    ref = args.reference_queries
    # Brute force also gives the true matches of every query.
    truth, brute_seconds = timed(lambda: brute_force(words, queries, args.t), args.repeats)
    rows = {}

    def record(name, found, seconds, count, **extra):
        planted_recall, match_recall = recalls(found, planted[:count], truth[:count])
        rows[name] = {"qps": count / seconds, "planted_recall": planted_recall, "match_recall": match_recall, **extra}

    record("numpy brute force", truth, brute_seconds, args.queries)
    for mode in ("exact", "paper"):
        found, seconds = timed(lambda: index.search(queries, args.t, mode=mode), args.repeats)
        record(f"{mode} mode", [m.ids.astype(np.int64) for m in found], seconds, args.queries)

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexBinaryFlat(NBYTES * 8)
    flat.add(stored)
    found, seconds = timed(lambda: faiss_range(flat, queries[:ref], args.t), args.repeats)
    record("faiss IndexBinaryFlat", found, seconds, ref)

    quantizer = faiss.IndexBinaryFlat(NBYTES * 8)
    ivf = faiss.IndexBinaryIVF(quantizer, NBYTES * 8, args.k)
    quantizer.add(result.centres)
    ivf.is_trained = True
    ivf.add(stored)
    # Two tunings: the smallest nprobe (power of two) reaching exact mode's recall of
    # the planted originals, and the smallest reaching its recall of every match.
    for name, measure in (("faiss IndexBinaryIVF", "planted_recall"), ("faiss IVF, all matches", "match_recall")):
        nprobe = 1
        while True:
            ivf.nprobe = nprobe
            found, seconds = timed(lambda: faiss_range(ivf, queries, args.t), args.repeats)
            record(name, found, seconds, args.queries, nprobe=nprobe)
            if rows[name][measure] >= rows["exact mode"][measure] or nprobe >= args.k:
                break
            nprobe *= 2

    exact = rows["exact mode"]
    print(f"\n{kind}: n={args.n} k={args.k} t={args.t} queries={args.queries} "
          f"K-means {kmeans_seconds:.1f} s ({result.n_batches} batches), index build {build_seconds:.1f} s, "
          f"radius median {int(np.median(index.radii))} max {int(index.radii.max())}")
    print(f"{'method':24s} {'queries/s':>10s} {'planted recall':>15s} {'match recall':>13s}")
    for name, row in rows.items():
        extra = f"  nprobe={row['nprobe']}" if "nprobe" in row else ""
        print(f"{name:24s} {row['qps']:10.1f} {row['planted_recall']:15.3f} {row['match_recall']:13.3f}{extra}")
    return {
        "exact_recall": exact["planted_recall"],
        "exact_match_recall": exact["match_recall"],
        "exact_qps": exact["qps"],
        "paper_recall": rows["paper mode"]["planted_recall"],
        "paper_qps": rows["paper mode"]["qps"],
        "bruteforce_qps": rows["numpy brute force"]["qps"],
        "faiss_flat_qps": rows["faiss IndexBinaryFlat"]["qps"],
        "faiss_ivf_qps": rows["faiss IndexBinaryIVF"]["qps"],
        "faiss_ivf_nprobe": rows["faiss IndexBinaryIVF"]["nprobe"],
        "faiss_ivf_recall": rows["faiss IndexBinaryIVF"]["planted_recall"],
        "exact_speedup_vs_bruteforce": exact["qps"] / rows["numpy brute force"]["qps"],
        "exact_vs_faiss_ivf": exact["qps"] / rows["faiss IndexBinaryIVF"]["qps"],
        "faiss_ivf_all_matches_nprobe": rows["faiss IVF, all matches"]["nprobe"],
        "exact_vs_faiss_ivf_all_matches": exact["qps"] / rows["faiss IVF, all matches"]["qps"],
        "kmeans_seconds": kmeans_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--t", type=int, default=64)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--reference-queries", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the fastest counts")
    args = parser.parse_args()
    args.reference_queries = min(args.reference_queries, args.queries)
    rng = np.random.default_rng(args.seed)
    summary = bench_set("random", args, rng)
    clustered = bench_set("clustered", args, rng)
    summary.update({f"clustered_{key}": value for key, value in clustered.items()})
    summary.update({"n": args.n, "k": args.k, "t": args.t, "queries": args.queries})
    print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in summary.items()}))


if __name__ == "__main__":
    main()
