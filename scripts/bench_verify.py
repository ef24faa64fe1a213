"""A grey zone above t, verified by local features: the recall it adds and the false pairs it lets through.

    python scripts/bench_verify.py [--zone 88] [--min-inliers 20] [--half held-out]

1. On the labelled set of ``scripts/accuracy_families.py`` (built there, reused
   here): the pairs with a fingerprint distance in (t, zone] are verified
   (every different-original pair, and a random sample of ``--sample``
   same-original pairs, since features cost ~0.2 s a picture here)
   (``pipeline/hashing/verify.py``: ORB matches that agree on one affine
   transform); a pair is a duplicate when it lies within t or passes with at
   least ``--min-inliers`` inliers. Prints recall per family (original-variant
   pairs) and overall (all same-original pairs) at t alone and with the
   verified zone (estimated from the sample), the different-original pairs each
   lets through, and the verifier's cost.
2. On the hard negatives of ``scripts/bench_false_merges.py``: every pair of
   tiles of different photos within the zone (the closest different pictures
   3 million pairs hold) is verified; the share that passes, with its 95 %
   Clopper-Pearson upper bound, multiplies the fingerprint's false-pair rate
   at the zone's edge: the false pairs the zone would let through at 10^5,
   10^6 and 10^7 images.

The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_families import hash_levers  # noqa: E402
from bench_false_merges import SIZES, fingerprints, pair_distances, photos, tiles, upper_bound  # noqa: E402
from edits import REPO, bench_module, build_set, split_originals  # noqa: E402
from PIL import Image  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.hashing.decode import decode_image  # noqa: E402
from imgdedup.pipeline.hashing.verify import orb_features, verify_pair  # noqa: E402


# Inlier floors whose pass rates are printed beside the chosen one.
FLOORS = (12, 16, 20, 24, 32)


def verify_pairs(pairs: np.ndarray, picture_of) -> tuple[np.ndarray, float, float]:
    """Inliers of each pair ``(m, 2)``; features extracted once per picture. Also ms per extraction and per verification."""
    features, extract, check = {}, 0.0, 0.0
    inliers = np.zeros(len(pairs), dtype=np.int64)
    for k, (i, j) in enumerate(pairs):
        for x in (int(i), int(j)):
            if x not in features:
                start = time.perf_counter()
                features[x] = orb_features(picture_of(x))
                extract += time.perf_counter() - start
        start = time.perf_counter()
        inliers[k] = verify_pair(features[int(i)], features[int(j)])
        check += time.perf_counter() - start
    return inliers, 1e3 * extract / max(1, len(features)), 1e3 * check / max(1, len(pairs))


def labelled(args, config) -> dict:
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
    first, second = np.triu_indices(len(files), 1)
    d = distances[first, second]
    zone = (d > t) & (d <= args.zone)
    same = groups[first] == groups[second]
    # every different-original pair of the zone, a sample of the same-original ones
    rng = np.random.default_rng(0)
    zone_same = np.flatnonzero(zone & same)
    sampled = rng.choice(zone_same, size=min(args.sample, len(zone_same)), replace=False)
    checked = np.sort(np.concatenate([np.flatnonzero(zone & ~same), sampled]))
    decode_options = dict(max_pixels=config.decode.max_pixels, formats=config.decode.formats,
                          draft_min_side=config.decode.draft_min_side)
    inliers, extract_ms, verify_ms = verify_pairs(
        np.stack([first[checked], second[checked]], axis=1),
        lambda x: decode_image(folder / files[x], **decode_options))
    passed = inliers >= args.min_inliers
    on_same = same[checked]
    pass_same = float(passed[on_same].mean()) if on_same.any() else 0.0
    # original-variant pairs per family: within t, or in the zone and passing (the sample's rate
    # for pairs not in the sample)
    original = {g: i for i, (g, f) in enumerate(zip(groups, families)) if f == "orig"}
    verdict = dict(zip(checked.tolist(), passed.tolist()))
    table = {}
    for family in sorted(set(families) - {"orig"}):
        members = np.flatnonzero(families == family)
        partners = np.array([original[groups[m]] for m in members])
        lo, hi = np.minimum(members, partners), np.maximum(members, partners)
        index = lo * len(files) - lo * (lo + 1) // 2 + (hi - lo - 1)  # position in the upper-triangle order
        within = d[index] <= t
        in_zone = zone[index]
        expected = within.astype(float)
        expected[in_zone] = [float(verdict[k]) if k in verdict else pass_same for k in index[in_zone]]
        table[family] = (float(within.mean()), float(expected.mean()))
    n_same = int(same.sum())
    recall_verified = float(((d <= t) & same).sum() + pass_same * len(zone_same)) / n_same
    return {
        "files": len(files), "zone_pairs": int(zone.sum()), "zone_same": len(zone_same),
        "zone_different": int((zone & ~same).sum()), "sampled_same": len(sampled),
        "pass_same": pass_same, "recall_t": float((d[same] <= t).mean()), "recall_verified": recall_verified,
        "false_t": int((d[~same] <= t).sum()),
        "false_verified": int((d[~same] <= t).sum() + passed[~on_same].sum()),
        "families": table, "extract_ms": extract_ms, "verify_ms": verify_ms,
        "floors": {floor: {"same_pass": float((inliers[on_same] >= floor).mean()) if on_same.any() else 0.0,
                           "different_pass": int((inliers[~on_same] >= floor).sum())} for floor in FLOORS},
        "inliers_different_max": int(inliers[~on_same].max()) if (~on_same).any() else None,
        "inliers_same_median": float(np.median(inliers[on_same])) if on_same.any() else None,
    }


def hard_negatives(args, config) -> dict:
    whole = photos()
    cut = tiles(whole, args.grid)
    forms, kept = fingerprints(cut, config)
    kept_tiles = [p for p, k in zip(cut, kept) if k]
    source = np.repeat(np.arange(len(whole)), args.grid * args.grid)[kept]
    d = pair_distances(forms)
    first, second = np.triu_indices(len(forms), 1)
    different = source[first] != source[second]
    m = int(different.sum())
    close = different & (d <= args.zone)
    inliers, _, _ = verify_pairs(np.stack([first[close], second[close]], axis=1), lambda x: kept_tiles[x])
    passed = int((inliers >= args.min_inliers).sum())
    rate_bound = float(upper_bound(passed, int(close.sum())))
    zone_rate = float(upper_bound(int(close.sum()), m))
    return {"pairs": m, "zone_pairs": int(close.sum()), "passed": passed, "pass_bound": rate_bound,
            "floors": {floor: int((inliers >= floor).sum()) for floor in FLOORS},
            "inliers_max": int(inliers.max()) if len(inliers) else None,
            "false_pair_rate_bound": zone_rate * rate_bound,
            "expected": {n: n * (n - 1) / 2 * zone_rate * rate_bound for n in SIZES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=REPO / "bench-out" / "families")
    parser.add_argument("--half", choices=("held-out", "tune"), default="held-out")
    parser.add_argument("--zone", type=int, default=88, help="upper edge of the verified grey zone, in bits")
    parser.add_argument("--min-inliers", type=int, default=20,
                        help="inliers a pair needs to pass (20: chosen on the tune half, above its different-original pairs' 15)")
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--sample", type=int, default=400, help="same-original zone pairs verified")
    args = parser.parse_args()
    config = load_config()
    t = config.dedup.threshold_t

    result = labelled(args, config)
    print(f"# {result['files']} files ({args.half}); grey zone ({t}, {args.zone}]: {result['zone_pairs']} pairs "
          f"({result['zone_same']} same-original, {result['sampled_same']} of them verified, passing "
          f"{result['pass_same']:.2f}; {result['zone_different']} different, all verified); "
          f"pass = at least {args.min_inliers} inliers")
    print(f"inliers in the zone: different-original max {result['inliers_different_max']}, "
          f"same-original median {result['inliers_same_median']}")
    print(f"features {result['extract_ms']:.0f} ms per picture, verification {result['verify_ms']:.1f} ms per pair")
    print("inlier floor: " + "; ".join(f"{floor}: same-original sample passing {v['same_pass']:.2f}, "
                                       f"different-original passing {v['different_pass']}"
                                       for floor, v in result["floors"].items()))
    print(f"| | recall (all same-original pairs) | different-original pairs accepted | "
          + " | ".join(result["families"]) + " |")
    print("|---|---|---|" + "---|" * len(result["families"]))
    print(f"| t = {t} | {result['recall_t']:.3f} | {result['false_t']} | "
          + " | ".join(f"{a:.2f}" for a, _ in result["families"].values()) + " |")
    print(f"| t + verified ({t}, {args.zone}] | {result['recall_verified']:.3f} | {result['false_verified']} | "
          + " | ".join(f"{b:.2f}" for _, b in result["families"].values()) + " |")

    hard = hard_negatives(args, config)
    print(f"\nhard negatives: {hard['zone_pairs']} pairs of tiles of different photos within {args.zone} "
          f"(of {hard['pairs']}); {hard['passed']} pass (most inliers {hard['inliers_max']}), "
          f"95 % bound on the pass rate {hard['pass_bound']:.2e}; passing at floors "
          + ", ".join(f"{floor}: {count}" for floor, count in hard["floors"].items()))
    print(f"false pairs the verified zone lets through (95 % bounds multiplied, p <= {hard['false_pair_rate_bound']:.2e}): "
          + ", ".join(f"{n:.0e} images: {v:.3g}" for n, v in hard["expected"].items()))
    print(json.dumps({"zone": args.zone, "min_inliers": args.min_inliers, "labelled": result, "hard_negatives": hard},
                     default=float))


if __name__ == "__main__":
    main()
