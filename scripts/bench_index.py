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

- exact mode and paper mode of :class:`imgdedup.pipeline.index.ClusterIndex` (paper mode
  searches the nearest class whatever its distance: its best recall);
- NumPy brute force (word-wise XOR + ``np.bitwise_count`` of each query against all rows);
- compiled brute force: the index's own compiled scan over every row, no
  pruning (what exact mode gains by the triangle inequality, kernel aside);
- FAISS ``IndexBinaryFlat`` and ``IndexBinaryIVF`` range search (radius t + 1,
  FAISS keeps distances below the radius) over the same K-means centres, with
  ``nprobe`` the smallest power of two whose planted recall equals exact mode's
  (``exact_vs_faiss_ivf``), and again whose recall of every match equals exact
  mode's (``exact_vs_faiss_ivf_all_matches``).

mih mode (multi-index hashing, with the plan the plan rule picks for ``--t``:
exact at t, ``IndexConfig.mih_plan``) is compared at equal recall of the planted originals
with FAISS ``IndexBinaryIVF`` (``nprobe`` the smallest power of two reaching
mih's recall; ``mih_vs_faiss_ivf``) and ``IndexBinaryHNSW`` (M = 32, k-NN
search of ``--hnsw-k`` neighbours kept when within t, ``efSearch`` the smallest
power of two from 16 reaching it; ``mih_vs_faiss_hnsw``).

Timed calls return flat arrays on both sides: the index's ``search_flat`` (each
query's matches in storage order) and FAISS's ``range_search`` (unsorted);
splitting them per query for the recall counts is not timed. ``exact mode,
sorted`` times :meth:`ClusterIndex.search`, which also sorts each query's
matches by distance and returns one ``Matches`` per query.

FAISS runs on one thread, as NumPy and the index do. Each method runs once
untimed, then ``--repeats`` times, and its fastest run counts (the machine may be shared). The flat index runs on the first
``--reference-queries`` queries. The last line is one JSON object:
the top-level keys are the random set's, ``clustered_*`` the clustered set's.
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from imgdedup.pipeline.cluster import hamming_kmeans
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.hamming import as_words, word_columns
from imgdedup.pipeline.index import ClusterIndex
from imgdedup.pipeline.index.kernels import scan_ranges

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


def brute_force(columns: np.ndarray, queries: np.ndarray, t: int) -> list[np.ndarray]:
    """Row indices within t of each query, by a NumPy scan of every row (columns: (w, n) uint64 words)."""
    found = []
    for q in as_words(queries):
        distance = np.zeros(columns.shape[1], dtype=np.uint16)
        for word, column in zip(q, columns):
            distance += np.bitwise_count(column ^ word)
        found.append(np.flatnonzero(distance <= t))
    return found


def compiled_brute_force(columns: np.ndarray, queries: np.ndarray, t: int) -> list[np.ndarray]:
    """Row indices within t of each query, by the index's compiled scan over every row."""
    m, n = len(queries), columns.shape[1]
    query, row, _ = scan_ranges(as_words(queries)[:, None], columns, np.arange(m), np.zeros(m, int), np.full(m, n), t)
    return np.split(row, np.searchsorted(query, np.arange(1, m)))


def timed(run, repeats: int = 1, warm_up: bool = True):
    """(result, best wall time in seconds over ``repeats`` runs, after one untimed run if ``warm_up``)."""
    if warm_up:
        run()  # compiles (or loads) the index's kernels; warms caches for every method alike
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


def per_query(query: np.ndarray, ids: np.ndarray, m: int) -> list[np.ndarray]:
    """Split flat (query, id) matches, grouped by query, into one id array per query."""
    return np.split(ids.astype(np.int64), np.searchsorted(query, np.arange(1, m)))


def faiss_per_query(result, m: int) -> list[np.ndarray]:
    lims, _, labels = result
    return [labels[lims[i]:lims[i + 1]] for i in range(m)]


def bench_set(kind: str, args, rng: np.random.Generator) -> dict:
    stored = make_set(kind, args.n, args.seeds, rng)
    planted = rng.choice(args.n, args.queries, replace=False)
    queries = flip(stored[planted], rng.integers(0, PLANTED_MAX_BITS + 1, args.queries), rng)
    clustering, kmeans_seconds = timed(lambda: hamming_kmeans(stored, args.k, seed=args.seed), warm_up=False)
    index, build_seconds = timed(lambda: ClusterIndex.build(stored, np.arange(args.n), clustering.centres,
                                                            clustering.labels), warm_up=False)
    columns = word_columns(as_words(stored))
    ref = args.reference_queries
    # Brute force also gives the true matches of every query.
    truth, brute_seconds = timed(lambda: brute_force(columns, queries, args.t), args.repeats)
    rows = {}

    def record(name, found, seconds, count, **extra):
        planted_recall, match_recall = recalls(found, planted[:count], truth[:count])
        rows[name] = {"qps": count / seconds, "planted_recall": planted_recall, "match_recall": match_recall, **extra}

    record("numpy brute force", truth, brute_seconds, args.queries)
    found, seconds = timed(lambda: compiled_brute_force(columns, queries, args.t), args.repeats)
    record("compiled brute force", found, seconds, args.queries)
    for mode in ("exact", "paper"):
        (query, ids, _), seconds = timed(lambda: index.search_flat(queries, args.t, mode=mode), args.repeats)
        record(f"{mode} mode", per_query(query, ids, args.queries), seconds, args.queries)
    found, seconds = timed(lambda: index.search(queries, args.t), args.repeats)
    record("exact mode, sorted", [m.ids.astype(np.int64) for m in found], seconds, args.queries)
    plan = Config().index.mih_plan(args.t, 8 * NBYTES, args.n, forms=1)  # the plan rule's, exact at t
    (query, ids, _), seconds = timed(lambda: index.search_flat(queries, args.t, mode="mih", substring_bits=plan[0],
                                                               probe_radius=plan[1]), args.repeats)
    record("mih mode", per_query(query, ids, args.queries), seconds, args.queries)

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexBinaryFlat(NBYTES * 8)
    flat.add(stored)
    result, seconds = timed(lambda: flat.range_search(queries[:ref], args.t + 1), args.repeats)
    record("faiss IndexBinaryFlat", faiss_per_query(result, ref), seconds, ref)

    quantizer = faiss.IndexBinaryFlat(NBYTES * 8)
    ivf = faiss.IndexBinaryIVF(quantizer, NBYTES * 8, args.k)
    quantizer.add(clustering.centres)
    ivf.is_trained = True
    ivf.add(stored)
    # Two tunings: the smallest nprobe (power of two) reaching exact mode's recall of
    # the planted originals, and the smallest reaching its recall of every match.
    for name, measure in (("faiss IndexBinaryIVF", "planted_recall"), ("faiss IVF, all matches", "match_recall")):
        nprobe = 1
        while True:
            ivf.nprobe = nprobe
            result, seconds = timed(lambda: ivf.range_search(queries, args.t + 1), args.repeats)
            record(name, faiss_per_query(result, args.queries), seconds, args.queries, nprobe=nprobe)
            if rows[name][measure] >= rows["exact mode"][measure] or nprobe >= args.k:
                break
            nprobe *= 2

    # IVF again, tuned to mih mode's recall of the planted originals, and HNSW (k-NN search,
    # the nearest --hnsw-k kept when within t), efSearch the smallest power of two reaching it.
    target = rows["mih mode"]["planted_recall"]
    for nprobe in 2 ** np.arange(int(np.log2(args.k)) + 1):
        ivf.nprobe = int(nprobe)
        result, seconds = timed(lambda: ivf.range_search(queries, args.t + 1), args.repeats)
        record("faiss IVF, mih's recall", faiss_per_query(result, args.queries), seconds, args.queries,
               nprobe=int(nprobe))
        if rows["faiss IVF, mih's recall"]["planted_recall"] >= target:
            break
    hnsw = faiss.IndexBinaryHNSW(NBYTES * 8, 32)
    hnsw.add(stored)
    for ef in 2 ** np.arange(4, 12):
        hnsw.hnsw.efSearch = int(ef)
        (distances, labels), seconds = timed(lambda: hnsw.search(queries, args.hnsw_k), args.repeats)
        found = [row[(row >= 0) & (d <= args.t)] for row, d in zip(labels, distances)]
        record("faiss HNSW, mih's recall", found, seconds, args.queries, nprobe=int(ef))
        if rows["faiss HNSW, mih's recall"]["planted_recall"] >= target:
            break

    exact = rows["exact mode"]
    mih = rows["mih mode"]
    print(f"\n{kind}: n={args.n} k={args.k} t={args.t} queries={args.queries} "
          f"K-means {kmeans_seconds:.1f} s ({clustering.n_batches} batches), index build {build_seconds:.1f} s, "
          f"radius median {int(np.median(index.radii))} max {int(index.radii.max())}")
    print(f"{'method':24s} {'queries/s':>10s} {'planted recall':>15s} {'match recall':>13s}")
    for name, row in rows.items():
        extra = f"  nprobe/efSearch={row['nprobe']}" if "nprobe" in row else ""
        print(f"{name:24s} {row['qps']:10.1f} {row['planted_recall']:15.3f} {row['match_recall']:13.3f}{extra}")
    return {
        "exact_recall": exact["planted_recall"],
        "exact_match_recall": exact["match_recall"],
        "exact_qps": exact["qps"],
        "exact_sorted_qps": rows["exact mode, sorted"]["qps"],
        "paper_recall": rows["paper mode"]["planted_recall"],
        "paper_qps": rows["paper mode"]["qps"],
        "bruteforce_qps": rows["numpy brute force"]["qps"],
        "compiled_bruteforce_qps": rows["compiled brute force"]["qps"],
        "faiss_flat_qps": rows["faiss IndexBinaryFlat"]["qps"],
        "faiss_ivf_qps": rows["faiss IndexBinaryIVF"]["qps"],
        "faiss_ivf_nprobe": rows["faiss IndexBinaryIVF"]["nprobe"],
        "faiss_ivf_recall": rows["faiss IndexBinaryIVF"]["planted_recall"],
        "exact_speedup_vs_bruteforce": exact["qps"] / rows["numpy brute force"]["qps"],
        "exact_speedup_vs_compiled_bruteforce": exact["qps"] / rows["compiled brute force"]["qps"],
        "exact_vs_faiss_ivf": exact["qps"] / rows["faiss IndexBinaryIVF"]["qps"],
        "faiss_ivf_all_matches_nprobe": rows["faiss IVF, all matches"]["nprobe"],
        "exact_vs_faiss_ivf_all_matches": exact["qps"] / rows["faiss IVF, all matches"]["qps"],
        "kmeans_seconds": kmeans_seconds,
        "mih_qps": mih["qps"],
        "mih_recall": mih["planted_recall"],
        "mih_match_recall": mih["match_recall"],
        "mih_vs_exact": mih["qps"] / exact["qps"],
        "faiss_ivf_at_mih_recall_nprobe": rows["faiss IVF, mih's recall"]["nprobe"],
        "faiss_ivf_at_mih_recall": rows["faiss IVF, mih's recall"]["planted_recall"],
        "mih_vs_faiss_ivf": mih["qps"] / rows["faiss IVF, mih's recall"]["qps"],
        "faiss_hnsw_ef_search": rows["faiss HNSW, mih's recall"]["nprobe"],
        "faiss_hnsw_recall": rows["faiss HNSW, mih's recall"]["planted_recall"],
        "mih_vs_faiss_hnsw": mih["qps"] / rows["faiss HNSW, mih's recall"]["qps"],
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
    parser.add_argument("--hnsw-k", type=int, default=16, help="neighbours an HNSW search returns")
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
