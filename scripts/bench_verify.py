"""A grey zone above t, verified by local features: its cost, the recall it adds and its false-accept rate.

    python scripts/bench_verify.py [--half held-out] [--min-inliers 12] [--fast-threshold 10] [--pairs 1000000]

1. Cost, against scikit-image's ORB + ``match_descriptors`` + ``ransac`` (the
   verifier's first implementation, kept here as the reference) in the same
   run: ms per extraction and per verification, and the inliers each finds on
   hard copies (turned 5°, 15 % cropped off a corner) and on pairs of
   different photos, over the first ``--speed-photos`` originals of the half.
2. Recall on the labelled set of ``scripts/accuracy_families.py`` (built there,
   reused here): every pair whose fingerprint distance lies between the
   smallest t and the largest zone ceiling is verified (no sampling); a pair
   is a duplicate when it lies within t or lies in the zone (t, Z] and has at
   least ``--min-inliers`` inliers. Recall per family (original ↔ variant
   pairs) and overall (all same-original pairs), and the different-original
   pairs accepted, at t = ``dedup.threshold_t`` and at the t rule's t for 10^5
   and 10^6 images, each alone and with zones up to several ceilings; and the
   pass rates at several floors (what the floor is chosen from, on the tune half).
3. False accepts on pictures that are not copies, from the photos and tiles of
   ``scripts/bench_false_merges.py`` (features once per picture): (a) tiles of
   different photos (all pairs, or a uniform sample of ``--pairs``), (b) tiles
   of one photo (non-overlapping: same light and texture), (c) the pairs of (a)
   whose fingerprint distance lies in a zone above the rule's t (what the
   verifier sees in a job), and the whole photos' pairs. For each: pairs
   verified, pairs passing, the 95 % one-sided Clopper-Pearson bound on the
   pass rate, the inlier maximum. Then the expected false merges of each zone
   at 10^5, 10^6 and 10^7 images: p_fingerprint(Z) × bound(a) × n (n − 1) / 2,
   which assumes the verdict on different photos does not depend on their
   fingerprint distance; (c) is the check on that.

A pair with fewer mutual matches than the lowest floor printed is not fitted
(its inliers are below every floor). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_families import hash_levers  # noqa: E402
from bench_false_merges import SIZES, fingerprints, pair_distances, photos, tiles, upper_bound  # noqa: E402
from edits import REPO, bench_module, build_set, split_originals  # noqa: E402
from PIL import Image  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.hashing.decode import decode_image  # noqa: E402
from imgdedup.pipeline.hashing.verify import (  # noqa: E402
    FAST_THRESHOLD, MIN_AREA, MIN_INLIERS, SIDE, Features, affine_inliers, mutual_matches, orb_features, verify_pair)
from imgdedup.pipeline.threshold import threshold_for  # noqa: E402

# Inlier floors whose pass rates are printed beside the chosen one; the lowest is where fitting starts.
FLOORS = (8, 10, 12, 16, 20, 24, 32)
# Upper edges of the verified zone above t = dedup.threshold_t, and above the rule's t.
CEILINGS = (80, 88, 96)
RULE_CEILINGS = (64, 88)


# ---------------------------------------------------------------- the reference: scikit-image


def skimage_features(picture: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The verifier's first extraction: scikit-image ORB at the same ``SIDE``, 500 keypoints."""
    from skimage.feature import ORB

    grey = picture.convert("L")
    scale = SIDE / max(grey.size)
    grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                       Image.Resampling.BILINEAR)
    orb = ORB(n_keypoints=500, fast_threshold=0.05)
    try:
        orb.detect_and_extract(np.asarray(grey, dtype=np.float64) / 255.0)
    except (RuntimeError, IndexError, ValueError):
        return np.zeros((0, 2)), np.zeros((0, 256), bool)
    return np.asarray(orb.keypoints, np.float64), np.asarray(orb.descriptors, bool)


def skimage_verify(a, b) -> int:
    """The verifier's first check: ``match_descriptors`` (cross check, ratio 0.8) and ``ransac`` (3 px, 300 trials)."""
    from skimage.feature import match_descriptors
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    if len(a[0]) < 3 or len(b[0]) < 3:
        return 0
    matches = match_descriptors(a[1], b[1], metric="hamming", cross_check=True, max_ratio=0.8)
    if len(matches) < 3:
        return 0
    _, inliers = ransac((a[0][matches[:, 0]][:, ::-1], b[0][matches[:, 1]][:, ::-1]), AffineTransform,
                        min_samples=3, residual_threshold=3.0, max_trials=300, rng=np.random.default_rng(0))
    return 0 if inliers is None else int(inliers.sum())


def hard_copy(picture: Image.Image) -> Image.Image:
    """Turned by 5° and 15 % cropped off one corner."""
    w, h = picture.size
    return picture.rotate(5, resample=Image.Resampling.BILINEAR).crop((int(0.15 * w), int(0.15 * h), w, h))


def cost(pictures: list[Image.Image]) -> dict:
    """ms per extraction and per verification, and inliers on copies and on different photos, for both."""
    copies = [hard_copy(p) for p in pictures]
    out = {}
    for name, extract, check in (("opencv", orb_features, verify_pair), ("skimage", skimage_features, skimage_verify)):
        start = time.perf_counter()
        own, copied = [extract(p) for p in pictures], [extract(p) for p in copies]
        extract_ms = 1e3 * (time.perf_counter() - start) / (2 * len(pictures))
        check(own[0], copied[0])  # compiled on first use: not part of the per-pair cost
        start = time.perf_counter()
        on_copies = [check(a, b) for a, b in zip(own, copied)]
        on_different = [check(own[i], own[j]) for i in range(len(own)) for j in range(i + 1, len(own))]
        verify_ms = 1e3 * (time.perf_counter() - start) / (len(on_copies) + len(on_different))
        out[name] = {"ms_per_extraction": extract_ms, "ms_per_verification": verify_ms,
                     "copies_inliers": on_copies, "copies_median": float(np.median(on_copies)),
                     "different_max": max(on_different), "different_pairs": len(on_different)}
    out["extraction_ratio"] = out["skimage"]["ms_per_extraction"] / out["opencv"]["ms_per_extraction"]
    out["verification_ratio"] = out["skimage"]["ms_per_verification"] / out["opencv"]["ms_per_verification"]
    return out


# ---------------------------------------------------------------- verifying many pairs on 2 processes

_FEATURES: list[Features] = []  # set before the pool forks, read by its workers
_MIN_AREA = MIN_AREA
_FAST_THRESHOLD = FAST_THRESHOLD


def _check_chunk(pairs: np.ndarray) -> np.ndarray:
    """``(m, 2)`` mutual matches and inliers (0 below ``FLOORS[0]`` matches) of ``(m, 2)`` picture pairs."""
    out = np.zeros((len(pairs), 2), np.int32)
    for k, (i, j) in enumerate(pairs):
        a, b = _FEATURES[i], _FEATURES[j]
        if len(a.keypoints) < 2 or len(b.keypoints) < 2:
            continue
        from_a, to_b = mutual_matches(a, b)
        out[k, 0] = len(from_a)
        if len(from_a) >= FLOORS[0]:
            out[k, 1] = affine_inliers(a, b, from_a, to_b, min_area=_MIN_AREA)
    return out


def check_pairs(features: list[Features], pairs: np.ndarray, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Mutual matches ``(m,)`` and inliers ``(m,)`` of ``(m, 2)`` pairs of ``features``."""
    global _FEATURES
    _FEATURES = features
    if len(pairs) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    chunks = np.array_split(pairs, max(1, len(pairs) // 20_000))
    if workers > 1 and len(pairs) > 20_000:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_check_chunk, chunks)
    else:
        parts = [_check_chunk(c) for c in chunks]
    found = np.concatenate(parts)
    return found[:, 0], found[:, 1]


_LOAD = None  # picture i, set before the pool forks


def _extract(i: int) -> Features:
    return orb_features(_LOAD(i), fast_threshold=_FAST_THRESHOLD)


def extract_all(load, count: int, workers: int) -> list[Features]:
    """Features of pictures ``load(0) ... load(count - 1)``, each loaded in the process that extracts it."""
    global _LOAD
    _LOAD = load
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_extract, range(count), chunksize=16)
    return [_extract(i) for i in range(count)]


# ---------------------------------------------------------------- 2. recall on the labelled set


def labelled(args, config, rule_t: dict[int, int]) -> dict:
    folder = args.set / args.half
    if not (folder / "truth.csv").exists():
        tune, held_out = split_originals()
        build_set(held_out if args.half == "held-out" else tune, folder)
    with open(folder / "truth.csv") as f:
        rows = list(csv.DictReader(f))
    files = [r["file"] for r in rows]
    groups = np.array([r["group"] for r in rows])
    families = np.array([r["family"] for r in rows])
    hashes, _, _ = hash_levers(folder, files, config)
    distances = bench_module("score").pair_distances(hashes["lbph+trim"])
    t = config.dedup.threshold_t
    configurations = [(t, z) for z in (t, *CEILINGS)]
    for n, rt in rule_t.items():
        configurations += [(rt, z) for z in (rt, *RULE_CEILINGS)]
    lowest, highest = min(c[0] for c in configurations), max(c[1] for c in configurations)
    first, second = np.triu_indices(len(files), 1)
    d = distances[first, second]
    same = groups[first] == groups[second]
    checked = np.flatnonzero((d > lowest) & (d <= highest))

    decode_options = dict(max_pixels=config.decode.max_pixels, formats=config.decode.formats,
                          draft_min_side=config.decode.draft_min_side)
    start = time.perf_counter()
    features = extract_all(lambda i: decode_image(folder / files[i], **decode_options), len(files), args.workers)
    extract_s = time.perf_counter() - start
    start = time.perf_counter()
    _, found = check_pairs(features, np.stack([first[checked], second[checked]], axis=1), args.workers)
    check_s = time.perf_counter() - start
    inliers = np.zeros(len(d), np.int32)
    inliers[checked] = found

    original = {g: i for i, (g, f) in enumerate(zip(groups, families)) if f == "orig"}
    family_index = {}
    for family in sorted(set(families) - {"orig"}):
        members = np.flatnonzero(families == family)
        partners = np.array([original[groups[m]] for m in members])
        lo, hi = np.minimum(members, partners), np.maximum(members, partners)
        family_index[family] = lo * len(files) - lo * (lo + 1) // 2 + (hi - lo - 1)  # upper-triangle order

    def accepted(rule_t: int, ceiling: int) -> np.ndarray:
        return (d <= rule_t) | ((d > rule_t) & (d <= ceiling) & (inliers >= args.min_inliers))

    table = []
    for rt, z in configurations:
        ok = accepted(rt, z)
        table.append({"t": rt, "zone": z, "recall": float(ok[same].mean()), "different_accepted": int(ok[~same].sum()),
                      "families": {f: float(ok[i].mean()) for f, i in family_index.items()}})
    zone = (d > t) & (d <= max(CEILINGS))
    zone_same, zone_different = zone & same, zone & ~same
    return {
        "files": len(files), "verified_pairs": len(checked), "verified_range": [lowest, highest],
        "extract_s": extract_s, "check_s": check_s, "table": table,
        "zone": [t, max(CEILINGS)], "zone_same": int(zone_same.sum()), "zone_different": int(zone_different.sum()),
        "floors": {floor: {"same_pass": float((inliers[zone_same] >= floor).mean()),
                           "different_pass": int((inliers[zone_different] >= floor).sum())} for floor in FLOORS},
        "inliers_different_max": int(inliers[zone_different].max()),
        "inliers_same_median": float(np.median(inliers[zone_same])),
    }


# ---------------------------------------------------------------- 3. false accepts on different pictures


def negatives(args, config, rule_t: dict[int, int]) -> dict:
    whole = photos()
    cut = tiles(whole, args.grid)
    forms, kept = fingerprints(cut, config)
    photo_forms, photo_kept = fingerprints(whole, config)
    kept_tiles = [p for p, k in zip(cut, kept) if k]
    kept_photos = [p for p, k in zip(whole, photo_kept) if k]
    source = np.repeat(np.arange(len(whole)), args.grid * args.grid)[kept]
    d = pair_distances(forms)
    first, second = np.triu_indices(len(forms), 1)
    different = source[first] != source[second]
    m_different = int(different.sum())

    start = time.perf_counter()
    pictures = kept_tiles + kept_photos
    features = extract_all(pictures.__getitem__, len(pictures), args.workers)
    extract_s = time.perf_counter() - start
    n_tiles = len(kept_tiles)

    rng = np.random.default_rng(0)
    pool_a = np.flatnonzero(different)
    sample_a = pool_a if args.pairs >= len(pool_a) else np.sort(rng.choice(pool_a, args.pairs, replace=False))
    zone_floor = min(rule_t.values())
    in_zone = different & (d > zone_floor) & (d <= max(CEILINGS))
    kinds = {
        "a_tiles_of_different_photos": sample_a,
        "b_tiles_of_one_photo": np.flatnonzero(~different),
        f"c_zone_({zone_floor},{max(CEILINGS)}]_tiles_of_different_photos": np.flatnonzero(in_zone),
    }
    photo_first, photo_second = np.triu_indices(len(kept_photos), 1)
    out = {"tiles": n_tiles, "photos": len(kept_photos), "tile_pairs_of_different_photos": m_different,
           "extract_s": extract_s, "kinds": {}}
    verdicts = {}
    for kind, index in kinds.items():
        start = time.perf_counter()
        matches, inliers = check_pairs(features, np.stack([first[index], second[index]], axis=1), args.workers)
        verdicts[kind] = (index, inliers)
        out["kinds"][kind] = summary(matches, inliers, args.min_inliers, time.perf_counter() - start)
    start = time.perf_counter()
    matches, inliers = check_pairs(features, np.stack([photo_first, photo_second], axis=1) + n_tiles, args.workers)
    out["kinds"]["whole_photos"] = summary(matches, inliers, args.min_inliers, time.perf_counter() - start)

    # the zone pairs: passing share by fingerprint distance band (does closeness raise the verdict?)
    c_index, c_inliers = verdicts[list(kinds)[2]]
    a_index, a_inliers = verdicts[list(kinds)[0]]
    bands = {}
    for lo, hi in ((zone_floor, 80), (80, 88), (88, 96)):
        band = (d[c_index] > lo) & (d[c_index] <= hi)
        bands[f"({lo},{hi}]"] = {"pairs": int(band.sum()),
                                  "at_least_lowest_floor": int((c_inliers[band] >= FLOORS[0]).sum())}
    out["by_distance"] = bands
    out["a_at_least_lowest_floor"] = int((a_inliers >= FLOORS[0]).sum())

    bound_a = out["kinds"][list(kinds)[0]]["bound"]
    t = config.dedup.threshold_t
    tile_d = d[different]
    expected = []
    for rt, ceilings in [(t, CEILINGS)] + [(rule_t[n], RULE_CEILINGS) for n in rule_t]:
        for z in ceilings:
            if z <= rt:
                continue
            p_z = float(upper_bound(int((tile_d <= z).sum()), m_different))
            p_fit = config.dedup.false_pair_tail.rate(z)
            expected.append({"t": rt, "zone": z, "p_fingerprint_bound": p_z, "p_fingerprint_fit": p_fit,
                             "false_accept_bound": bound_a,
                             "expected": {n: n * (n - 1) / 2 * p_z * bound_a for n in SIZES}})
    out["expected"] = expected
    return out


def summary(matches: np.ndarray, inliers: np.ndarray, floor: int, seconds: float) -> dict:
    passed = int((inliers >= floor).sum())
    return {"pairs": len(inliers), "passed": passed, "bound": float(upper_bound(passed, max(1, len(inliers)))),
            "inliers_max": int(inliers.max()) if len(inliers) else 0,
            "matches_max": int(matches.max()) if len(matches) else 0,
            "matches_mean": float(matches.mean()) if len(matches) else 0.0,
            "floors": {f: int((inliers >= f).sum()) for f in FLOORS}, "seconds": seconds}


# ---------------------------------------------------------------- report


def print_cost(result: dict) -> None:
    print("| | ms per extraction | ms per verification | copies: median inliers (min) | different: most inliers |")
    print("|---|---|---|---|---|")
    for name in ("opencv", "skimage"):
        r = result[name]
        print(f"| {name} | {r['ms_per_extraction']:.1f} | {r['ms_per_verification']:.2f} | "
              f"{r['copies_median']:.0f} ({min(r['copies_inliers'])}) | {r['different_max']} "
              f"(of {r['different_pairs']} pairs) |")
    print(f"skimage / opencv: extraction {result['extraction_ratio']:.0f}x, "
          f"verification {result['verification_ratio']:.0f}x")


def print_labelled(result: dict, floor: int) -> None:
    families = list(result["table"][0]["families"])
    print(f"| t | verified zone | recall (all same-original pairs) | different-original accepted | "
          + " | ".join(families) + " |")
    print("|---|---|---|---|" + "---|" * len(families))
    for row in result["table"]:
        zone = f"({row['t']}, {row['zone']}]" if row["zone"] > row["t"] else "none"
        print(f"| {row['t']} | {zone} | {row['recall']:.3f} | {row['different_accepted']} | "
              + " | ".join(f"{v:.2f}" for v in row["families"].values()) + " |")
    lo, hi = result["zone"]
    print(f"zone ({lo}, {hi}]: {result['zone_same']} same-original pairs (median inliers "
          f"{result['inliers_same_median']:.0f}), {result['zone_different']} different-original (most inliers "
          f"{result['inliers_different_max']}); pass = at least {floor} inliers")
    print("| floor | same-original passing | different-original passing |")
    print("|---|---|---|")
    for f, v in result["floors"].items():
        print(f"| {f} | {v['same_pass']:.3f} | {v['different_pass']} |")


def print_negatives(result: dict, floor: int) -> None:
    print(f"{result['tiles']} tiles, {result['photos']} photos; features {result['extract_s']:.0f} s")
    print(f"| pairs | verified | passing (>= {floor}) | 95 % bound | most inliers | most matches | mean matches | "
          + " | ".join(f">= {f}" for f in FLOORS) + " | s |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(FLOORS) + "---|")
    for kind, r in result["kinds"].items():
        print(f"| {kind} | {r['pairs']} | {r['passed']} | {r['bound']:.2e} | {r['inliers_max']} | {r['matches_max']} | "
              f"{r['matches_mean']:.1f} | " + " | ".join(str(v) for v in r["floors"].values())
              + f" | {r['seconds']:.0f} |")
    print("zone pairs by fingerprint distance, with at least " + str(FLOORS[0]) + " inliers: "
          + ", ".join(f"{k}: {v['at_least_lowest_floor']} of {v['pairs']}" for k, v in result["by_distance"].items()))
    print("| t | zone | p_fingerprint(Z) bound (fit) | false-accept bound | "
          + " | ".join(f"expected false merges at {n:.0e}" for n in SIZES) + " |")
    print("|---|---|---|---|" + "---|" * len(SIZES))
    for row in result["expected"]:
        print(f"| {row['t']} | ({row['t']}, {row['zone']}] | {row['p_fingerprint_bound']:.1e} "
              f"({row['p_fingerprint_fit']:.1e}) | {row['false_accept_bound']:.1e} | "
              + " | ".join(f"{v:.2g}" for v in row["expected"].values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=REPO / "bench-out" / "families")
    parser.add_argument("--half", choices=("held-out", "tune"), default="held-out")
    parser.add_argument("--min-inliers", type=int, default=MIN_INLIERS, help="inliers a pair needs to pass")
    parser.add_argument("--fast-threshold", type=int, default=FAST_THRESHOLD,
                        help="ORB's FAST corner threshold, grey levels")
    parser.add_argument("--min-area", type=float, default=MIN_AREA,
                        help="share of each picture the inliers must span (0: any)")
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=1_000_000,
                        help="pairs of tiles of different photos verified (a uniform sample when fewer than all)")
    parser.add_argument("--speed-photos", type=int, default=16, help="originals the cost comparison uses")
    parser.add_argument("--workers", type=int, default=2, help="processes verifying pairs (at most 2 here)")
    parser.add_argument("--skip", choices=("cost", "labelled", "negatives"), action="append", default=[])
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core per process, like scikit-image
    global _MIN_AREA, _FAST_THRESHOLD
    _MIN_AREA, _FAST_THRESHOLD = args.min_area, args.fast_threshold
    config = load_config()
    dedup = config.dedup
    rule_t = {n: threshold_for(n, dedup.max_false_merge_rate, dedup.false_pair_tail, dedup.threshold_t)
              for n in SIZES[:2]}
    out = {"min_inliers": args.min_inliers, "min_area": args.min_area, "half": args.half, "rule_t": rule_t}
    print(f"# pass = at least {args.min_inliers} inliers spanning {args.min_area:g} of both pictures; the t rule's t: "
          + ", ".join(f"{n:.0e} images: {t}" for n, t in rule_t.items()))

    if "cost" not in args.skip:
        tune, held_out = split_originals()
        originals = (held_out if args.half == "held-out" else tune)[:args.speed_photos]
        pictures = []
        for path in originals:
            picture = Image.open(path).convert("RGB")
            picture.thumbnail((1024, 1024))
            pictures.append(picture)
        out["cost"] = cost(pictures)
        print(f"\n## cost: {len(pictures)} originals of the {args.half} half and their hard copies, one core")
        print_cost(out["cost"])
    if "labelled" not in args.skip:
        out["labelled"] = labelled(args, config, rule_t)
        r = out["labelled"]
        print(f"\n## recall: {r['files']} files ({args.half}); {r['verified_pairs']} pairs in "
              f"({r['verified_range'][0]}, {r['verified_range'][1]}] verified (features {r['extract_s']:.0f} s, "
              f"verification {r['check_s']:.0f} s on {args.workers} processes)")
        print_labelled(r, args.min_inliers)
    if "negatives" not in args.skip:
        out["negatives"] = negatives(args, config, rule_t)
        print("\n## false accepts on pictures that are not copies")
        print_negatives(out["negatives"], args.min_inliers)

    headline = {"ms_per_extraction": out.get("cost", {}).get("opencv", {}).get("ms_per_extraction"),
                "ms_per_verification": out.get("cost", {}).get("opencv", {}).get("ms_per_verification"),
                "skimage_ratio": {k: out["cost"][f"{k}_ratio"] for k in ("extraction", "verification")}
                if "cost" in out else None,
                "false_accept_upper_bound": {k: v["bound"]
                                             for k, v in out.get("negatives", {}).get("kinds", {}).items()},
                "recall": [{k: row[k] for k in ("t", "zone", "recall", "different_accepted")}
                           for row in out.get("labelled", {}).get("table", [])]}
    print(json.dumps({**headline, "details": out}, default=float))


if __name__ == "__main__":
    main()
