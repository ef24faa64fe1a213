"""Ingest decision latency at 10^5-10^7 stored fingerprints: the plan rule's choice beside exact mode and FAISS.

    python scripts/bench_ingest.py [--sizes 100000,1000000,10000000] [--data random photo] [--queries 2000]
                                   [--reference-queries 200] [--plan-queries 400] [--k 1024] [--t64]
                                   [--hnsw-max-n 300000] [--auto-only] [--cache DIR] [--set KEY=VALUE ...]

Measures what an upload costs once its fingerprint is computed: the decision
step of ``imgdedup ingest`` (``jobs.lookup.nearest_within`` over the class
index, then ``ClusterIndex.add`` for a new image), one upload at a time, each
carrying its 8 dihedral forms as ingest sends them.

t is the t rule's for the store's size (``dedup.threshold_for``: 38 bits at
10^5, 29 at 10^6, 20 at 10^7); with ``--t64`` every size runs again at t = 64
(the rule off), for reference.

Stored fingerprints (256 bits), per ``--data`` kind:

``random``
    uniform random rows (photo fingerprints are near-random to one another:
    two different photos lie ~114 bits apart);
``photo``
    photo-like rows from a model fitted to real fingerprints: each byte drawn
    independently from that byte's values among 2 000 lbph fingerprints of
    mosaics of the shared photos (``scripts/bench_join.py``, which checks the
    model's bucket load against held-out real mosaics);
``mosaic``
    real lbph fingerprints of mosaics (cached ``mosaics-N.npy`` of
    ``bench_join.photo_tiles``; needs ``n + queries`` of them), to check the
    model against real ones at the same size.

Queries: half are planted copies of a stored row: the row XOR a *real edit
mask* (the XOR of the closest forms of an original and its edited copy, from
the labelled variant sets of the shared photos, ``bench_join.real_edit_masks``)
whose popcount is at most t, placed in a random dihedral slot of the upload
(a slot other than 0 is a rotated or mirrored copy); the other forms are drawn
like the stored rows. The other half are new images, added to the index as
ingest adds them. Recall is the share of planted uploads decided a duplicate.

Methods, in the same run:

- ``auto``: the default ``[index]`` (the mode and mih plan the plan rule
  picks, printed), decision and add, on every query;
- ``exact``: ``index.mode = "exact"``, on ``--reference-queries``;
- plans: mih mode with each of the four cheapest exact plans by the cost model
  (search only, on ``--plan-queries``), the model's estimate beside the
  measured mean: ``model_picks_fastest`` says whether the rule's plan was the
  fastest measured;
- FAISS ``IndexBinaryFlat`` (range search of the 8 forms, radius t + 1),
  ``IndexBinaryIVF`` over the same K-means centres with ``nprobe`` the
  smallest power of two reaching auto's recall, and ``IndexBinaryHNSW``
  (M = 32, the 16 nearest of each form kept when within t, ``efSearch`` the
  smallest power of two from 16 reaching it; up to ``--hnsw-max-n`` rows, its
  build takes minutes beyond), search only, one upload (8 forms) per call, on
  one thread, on ``--reference-queries``.

The index's scans use ``index.threads`` (2 here); mih searches and FAISS run on
one thread. The process's peak resident memory and the load average are
printed with each size (the machine may be shared: ratios within a run are the
meaningful part). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_join import NBYTES, photo_like, photo_tiles, real_edit_masks  # noqa: E402

from imgdedup.jobs.lookup import nearest_within  # noqa: E402
from imgdedup.pipeline.cluster import hamming_kmeans  # noqa: E402
from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.index import ClusterIndex  # noqa: E402
from imgdedup.pipeline.search_plan import MihPlan, exact_up_to, mih_cost_ns, plans  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FORMS = 8


def stored_rows(kind: str, n: int, rng: np.random.Generator, tiles: np.ndarray, mosaics: np.ndarray | None):
    """(n, NBYTES) stored fingerprints and a function drawing (m, FORMS, NBYTES) upload forms of that kind."""
    if kind == "random":
        return (rng.integers(0, 256, (n, NBYTES), dtype=np.uint8),
                lambda m: rng.integers(0, 256, (m, FORMS, NBYTES), dtype=np.uint8))
    if kind == "photo":
        rows = np.empty((n, NBYTES), np.uint8)
        for start in range(0, n, 1 << 18):
            rows[start:start + (1 << 18)] = photo_like(rng, tiles, min(1 << 18, n - start))[:, 0]
        return rows, lambda m: photo_like(rng, tiles, m)
    if mosaics is None or len(mosaics) < n:
        raise SystemExit(f"--data mosaic needs at least n + queries cached mosaic fingerprints, have "
                         f"{0 if mosaics is None else len(mosaics)}")
    rest = mosaics[n:]
    return np.ascontiguousarray(mosaics[:n, 0]), lambda m: rest[rng.choice(len(rest), m, replace=False)]


def make_uploads(stored: np.ndarray, draw_forms, count: int, masks: np.ndarray, t: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(count, FORMS, NBYTES) uploads and, per upload, the planted source row (-1 for a new image)."""
    uploads = draw_forms(count).copy()
    planted = np.full(count, -1)
    half = count // 2
    planted[:half] = rng.choice(len(stored), half, replace=False)
    within = masks[np.unpackbits(masks, axis=1).sum(axis=1) <= t]
    slots = rng.integers(0, FORMS, half)
    uploads[np.arange(half), slots] = stored[planted[:half]] ^ within[rng.integers(0, len(within), half)]
    order = rng.permutation(count)
    return uploads[order], planted[order]


def recall(found: int, planted: np.ndarray) -> float:
    """Share of the planted uploads found."""
    return round(float(found) / max(1, int((planted >= 0).sum())), 4)


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "qps": round(1e3 / float(ms.mean()), 1)}


def run_ingest(index: ClusterIndex, uploads: np.ndarray, planted: np.ndarray, config) -> dict:
    """Decide each upload as ingest does (nearest within t, then add a new image); latency and recall."""
    first_id = len(index)
    nearest_within(index, uploads[:1], config)  # compiles or loads the kernels, builds the table: untimed
    seconds, found = [], 0
    for i, upload in enumerate(uploads):
        started = time.perf_counter()
        match = nearest_within(index, upload[None], config)[0]
        if match is None:
            index.add(upload[0], first_id + i, centre_threshold=config.dedup.centre_threshold)
        seconds.append(time.perf_counter() - started)
        found += planted[i] >= 0 and match is not None
    return percentiles(seconds) | {"recall": recall(found, planted)}


def run_plan(index: ClusterIndex, uploads: np.ndarray, planted: np.ndarray, t: int, plan: MihPlan) -> dict:
    """mih search alone with one plan (no add): latency and recall."""
    index.search(uploads[:1], t, mode="mih", substring_bits=plan.substring_bits, probe_radius=plan.probe_radius)
    seconds, found = [], 0
    for upload, source in zip(uploads, planted):
        started = time.perf_counter()
        match = index.search(upload[None], t, mode="mih", substring_bits=plan.substring_bits,
                             probe_radius=plan.probe_radius)[0]
        seconds.append(time.perf_counter() - started)
        found += source >= 0 and source in set(match.ids.tolist())
    return percentiles(seconds) | {"recall": recall(found, planted)}


def faiss_range(index, uploads: np.ndarray, planted: np.ndarray, t: int) -> dict:
    """One range search of an upload's forms per call; recall of the planted sources."""
    seconds, found = [], 0
    for upload, source in zip(uploads, planted):
        started = time.perf_counter()
        lims, _, labels = index.range_search(upload, t + 1)
        seconds.append(time.perf_counter() - started)
        found += source >= 0 and source in set(labels.tolist())
    return percentiles(seconds) | {"recall": recall(found, planted)}


def faiss_knn(index, uploads: np.ndarray, planted: np.ndarray, t: int, k: int = 16) -> dict:
    seconds, found = [], 0
    for upload, source in zip(uploads, planted):
        started = time.perf_counter()
        distances, labels = index.search(upload, k)
        seconds.append(time.perf_counter() - started)
        found += source >= 0 and source in set(labels[distances <= t].tolist())
    return percentiles(seconds) | {"recall": recall(found, planted)}


def ivf_range(ivf, nprobe: int, *, uploads, planted, t) -> dict:
    ivf.nprobe = nprobe
    return faiss_range(ivf, uploads, planted, t)


def hnsw_knn(hnsw, ef_search: int, *, uploads, planted, t) -> dict:
    hnsw.hnsw.efSearch = ef_search
    return faiss_knn(hnsw, uploads, planted, t)


def tuned(run, knob_values, target: float) -> dict:
    """The first knob value whose recall reaches ``target`` (else the last), with its figures."""
    for value in knob_values:
        figures = run(int(value)) | {"knob": int(value)}
        if figures["recall"] >= target:
            break
    return figures


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_case(kind: str, n: int, t: int, stored, draw_forms, clustering, masks, args, rule_off: bool) -> dict:
    rng = np.random.default_rng(args.seed + n + t)
    uploads, planted = make_uploads(stored, draw_forms, args.queries, masks, t, rng)
    base = [*args.set] + (["dedup.max_false_merge_rate=0", f"dedup.threshold_t={t}"] if rule_off else [])
    config = load_config(overrides=base)
    exact_config = load_config(overrides=[*base, "index.mode=exact"])

    def fresh_index():
        return ClusterIndex.build(stored, np.arange(n), clustering.centres, clustering.labels)

    index = fresh_index()
    rule_t = max(config.dedup.threshold_for(n + args.queries), 0)
    assert rule_t == t, (rule_t, t)
    chosen = config.index.resolved(n, t, 8 * NBYTES, FORMS)
    plan = MihPlan(chosen.substring_bits, chosen.probe_radius)
    figures: dict = {"n": n, "t": t, "mode": chosen.mode, "plan": list(plan), "exact_up_to": exact_up_to(plan, 256)}
    tag = f"[{kind} n={n:.0e} t={t}]"

    # The cost model's four cheapest exact plans, timed on the untouched index (search only).
    exact_plans = sorted((p for p in plans(256) if exact_up_to(p, 256) >= t),
                         key=lambda p: mih_cost_ns(p, 256, n, FORMS))[:4]
    if chosen.mode == "mih" and not args.auto_only:
        checks = {}
        for candidate in exact_plans:
            measured = run_plan(index, uploads[:args.plan_queries], planted[:args.plan_queries], t, candidate)
            model_ms = mih_cost_ns(candidate, 256, n, FORMS) / 1e6
            checks[f"{candidate.substring_bits},{candidate.probe_radius}"] = measured | {"model_ms": round(model_ms, 3)}
            print(f"{tag} plan b={candidate.substring_bits} r={candidate.probe_radius}: model {model_ms:.3f} ms, "
                  f"measured {measured}", flush=True)
        fastest = min(checks, key=lambda key: checks[key]["mean_ms"])
        figures["plans"] = checks
        figures["model_picks_fastest"] = fastest == f"{plan.substring_bits},{plan.probe_radius}"

    started = time.perf_counter()
    figures["auto"] = run_ingest(index, uploads, planted, config)
    print(f"{tag} auto ({chosen.mode}, b={plan.substring_bits} r={plan.probe_radius}): {figures['auto']} "
          f"({time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    ref = slice(0, args.reference_queries)
    if args.auto_only:
        figures["peak_rss_mb"], figures["load"] = round(peak_rss_mb()), round(os.getloadavg()[0], 1)
        return figures
    if chosen.mode != "exact":
        figures["exact"] = run_ingest(fresh_index(), uploads[ref], planted[ref], exact_config)
        print(f"{tag} exact: {figures['exact']}", flush=True)
    del index

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexBinaryFlat(8 * NBYTES)
    flat.add(stored)
    figures["faiss_flat"] = faiss_range(flat, uploads[ref], planted[ref], t)
    print(f"{tag} faiss flat: {figures['faiss_flat']}", flush=True)
    del flat
    target = figures["auto"]["recall"]
    quantizer = faiss.IndexBinaryFlat(8 * NBYTES)
    ivf = faiss.IndexBinaryIVF(quantizer, 8 * NBYTES, len(clustering.centres))
    quantizer.add(clustering.centres)
    ivf.is_trained = True
    ivf.add(stored)
    on = {"uploads": uploads[ref], "planted": planted[ref], "t": t}
    figures["faiss_ivf"] = tuned(functools.partial(ivf_range, ivf, **on),
                                 2 ** np.arange(int(np.log2(len(clustering.centres))) + 1), target)
    print(f"{tag} faiss IVF (nprobe {figures['faiss_ivf']['knob']}): {figures['faiss_ivf']}", flush=True)
    del ivf, quantizer
    if n <= args.hnsw_max_n:
        started = time.perf_counter()
        hnsw = faiss.IndexBinaryHNSW(8 * NBYTES, 32)
        faiss.omp_set_num_threads(2)  # the build only
        hnsw.add(stored)
        faiss.omp_set_num_threads(1)
        build = time.perf_counter() - started
        figures["faiss_hnsw"] = tuned(functools.partial(hnsw_knn, hnsw, **on), 2 ** np.arange(4, 12), target) | {
            "build_s": round(build, 1)}
        print(f"{tag} faiss HNSW (efSearch {figures['faiss_hnsw']['knob']}): {figures['faiss_hnsw']}", flush=True)
        del hnsw
    best = max((key for key in ("faiss_flat", "faiss_ivf", "faiss_hnsw") if key in figures
                and figures[key]["recall"] >= target), key=lambda key: figures[key]["qps"], default=None)
    if best is not None:
        figures["vs_best_faiss"] = round(figures["auto"]["qps"] / figures[best]["qps"], 2)
        figures["best_faiss"] = best
    figures["peak_rss_mb"] = round(peak_rss_mb())
    figures["load"] = round(os.getloadavg()[0], 1)
    print(f"{tag} peak RSS {figures['peak_rss_mb']} MB, load {figures['load']}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--data", nargs="+", choices=["random", "photo", "mosaic"], default=["random", "photo"])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--reference-queries", type=int, default=200)
    parser.add_argument("--plan-queries", type=int, default=400)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--t64", action="store_true", help="also run every size at t = 64 (the t rule off)")
    parser.add_argument("--hnsw-max-n", type=int, default=300_000)
    parser.add_argument("--auto-only", action="store_true",
                        help="time the rule's choice alone (no plan check, exact mode or FAISS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=REPO / "bench-out" / "bench-join")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every method, e.g. index.substring_bits=20 (repeatable)")
    args = parser.parse_args()
    config = load_config(overrides=args.set)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    masks, _ = real_edit_masks(args.cache, 64)
    tiles = photo_tiles(args.cache, 4000)[:2000]  # the half bench_join fits its model on
    cached = sorted(args.cache.glob("mosaics-*.npy"), key=lambda p: int(p.stem.split("-")[1]))
    mosaics = np.load(cached[-1], mmap_mode="r") if "mosaic" in args.data and cached else None
    results: dict = {"queries": args.queries, "k": args.k, "forms": FORMS, "overrides": args.set}
    for kind in args.data:
        for n in sizes:
            rng = np.random.default_rng(args.seed + n)
            started = time.perf_counter()
            stored, draw_forms = stored_rows(kind, n, rng, tiles, mosaics)
            clustering = hamming_kmeans(stored, args.k, **dataclasses.asdict(config.cluster))
            print(f"[{kind} n={n:.0e}] data and {args.k} classes in {time.perf_counter() - started:.0f} s",
                  flush=True)
            ts = [(max(config.dedup.threshold_for(n + args.queries), 0), False)] + ([(64, True)] if args.t64 else [])
            for t, rule_off in ts:
                key = f"{kind}_{n:.0e}_t{t}".replace("+0", "")
                results[key] = bench_case(kind, n, t, stored, draw_forms, clustering, masks, args, rule_off)
            del stored, clustering
    summary = {key: value for key, value in results.items() if not isinstance(value, dict)}
    for key, value in results.items():
        if isinstance(value, dict):
            summary[key] = {name: value[name] for name in ("mode", "plan", "t", "peak_rss_mb", "vs_best_faiss",
                                                            "best_faiss", "model_picks_fastest") if name in value}
            summary[key] |= {f"auto_{m}": value["auto"][m] for m in ("p50_ms", "p99_ms", "qps", "recall")}
            for other in ("exact", "faiss_flat", "faiss_ivf", "faiss_hnsw"):
                if other in value:
                    summary[key] |= {f"{other}_qps": value[other]["qps"], f"{other}_recall": value[other]["recall"]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
