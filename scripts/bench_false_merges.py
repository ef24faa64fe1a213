"""False pairs of the default fingerprint between different photos, with confidence bounds, and what they mean at scale.

    python scripts/bench_false_merges.py [--grid 5] [--t 64]

Two sets of fingerprints of *different* pictures, hashed with the configured
algorithm, thumbnail step (``hash.trim_borders``) and dihedral forms, held to
``hash.min_quality`` as the jobs hold them:

- photos: ``../shared/data/distinct``, ``../shared/data/dev`` and scikit-image's
  bundled photos, whole;
- tiles: each of those photos cut into a ``grid × grid`` array of
  non-overlapping tiles, every tile one picture. Pairs of tiles of one photo
  (same light, same texture: far more alike than unrelated photos, and most of
  the closest pairs) are counted apart; the tables and the fit use the pairs of
  tiles of different photos.

For every pair the distance is the smallest over the 8 dihedral forms (what the
bulk job's join compares). For each t the table gives the observed false pairs,
their rate, its one-sided 95 % Clopper-Pearson upper bound, and the expected
false pairs (an upper bound on false merges under star groups) at 10^5, 10^6
and 10^7 images from that bound. Below the smallest observed distance the bound
is only "fewer than 3 in m" (m pairs); what happens further down is an
extrapolation: a log-linear fit to the upper bounds of the observed lower tail,
``log10 p(<= t) = a + b t``, whose ``[a, b]`` is ``dedup.false_pair_tail`` in
``conf/default.toml`` and drives the t rule (``pipeline/threshold.py``). The
last table is that rule at 10^5, 10^6, 10^7 images and its expected false merges.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy.stats import beta

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edits import PHOTO_DIRS, SUFFIXES  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.hashing.algorithms import get_algorithm  # noqa: E402
from imgdedup.pipeline.hashing.quality import quality_batch, quality_thumbnail  # noqa: E402
from imgdedup.pipeline.threshold import FalsePairTail, expected_false_merges, threshold_for  # noqa: E402

# scikit-image's bundled photographs (cat is chelsea again, so it is left out).
SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina", "moon", "coins", "text", "page", "grass", "gravel",
                  "brick", "clock", "cell")
SIZES = (10**5, 10**6, 10**7)
THRESHOLDS = (32, 40, 48, 56, 64, 72, 80, 88, 96)


def photos(max_side: int = 1024) -> list[Image.Image]:
    """Every distinct photo as RGB, at most ``max_side`` pixels on its long side."""
    from skimage import data

    out = [ImageOps.exif_transpose(Image.open(p)).convert("RGB")
           for d in PHOTO_DIRS for p in sorted(d.iterdir()) if p.suffix.lower() in SUFFIXES]
    out += [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SKIMAGE_PHOTOS]
    for picture in out:
        picture.thumbnail((max_side, max_side))
    return out


def tiles(pictures: list[Image.Image], grid: int) -> list[Image.Image]:
    """Each picture cut into ``grid × grid`` non-overlapping tiles, picture after picture."""
    out = []
    for picture in pictures:
        w, h = picture.size
        for row in range(grid):
            for col in range(grid):
                out.append(picture.crop((col * w // grid, row * h // grid,
                                         (col + 1) * w // grid, (row + 1) * h // grid)))
    return out


def fingerprints(pictures: list[Image.Image], config) -> tuple[np.ndarray, np.ndarray]:
    """Dihedral forms ``(n, 8, nbytes)`` of the pictures the jobs would dedup, and which those are.

    Returns the forms of the pictures whose quality reaches ``hash.min_quality``
    and a ``(len(pictures),)`` bool mask of them.
    """
    algorithm = get_algorithm(config.hash.algo, size=config.hash.size, bits=config.hash.bits,
                              trim_borders=config.hash.trim_borders)
    forms = algorithm.dihedral_batch(np.stack([algorithm.thumbnail(p) for p in pictures]))
    quality = quality_batch(np.stack([quality_thumbnail(p) for p in pictures]),
                            np.array([p.width * p.height for p in pictures]))
    kept = quality >= config.hash.min_quality
    return forms[kept], kept


def pair_distances(forms: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Smallest-over-forms distance of every unordered pair, ``(n (n - 1) / 2,)`` int16, upper-triangle order."""
    n = len(forms)
    plain = forms[:, 0]
    out = []
    for start in range(0, n, chunk):
        rows = plain[start:start + chunk]
        # each row's plain form against every column's forms, and the other way round
        d = np.bitwise_count(rows[:, None, None, :] ^ forms[None, :, :, :]).sum(axis=-1, dtype=np.int16).min(axis=-1)
        back = np.bitwise_count(forms[start:start + chunk, None, :, :] ^ plain[None, :, None, :]).sum(
            axis=-1, dtype=np.int16).min(axis=-1)
        d = np.minimum(d, back)
        for k in range(len(rows)):
            out.append(d[k, start + k + 1:])
    return np.concatenate(out) if out else np.zeros(0, np.int16)


def upper_bound(count: np.ndarray | int, m: int, confidence: float = 0.95) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on a rate from ``count`` events in ``m`` trials."""
    return beta.ppf(confidence, np.asarray(count) + 1, m - np.asarray(count))


def fit_tail(distances: np.ndarray, lowest: int) -> FalsePairTail:
    """Log-linear fit to the upper bounds of ``p(<= x)`` over the ``lowest`` smallest distances."""
    m = len(distances)
    ordered = np.sort(distances)
    xs = np.unique(ordered[:lowest])
    counts = np.searchsorted(ordered, xs, side="right")
    slope, intercept = np.polyfit(xs, np.log10(upper_bound(counts, m)), 1)
    return FalsePairTail(float(intercept), float(slope))


def table(name: str, distances: np.ndarray, tail: FalsePairTail) -> list[dict]:
    m = len(distances)
    print(f"\n## {name}: {m} pairs; smallest {distances.min()}, 0.1 % {np.quantile(distances, 0.001):.0f}, "
          f"median {np.median(distances):.0f}, mean {distances.mean():.1f} ± {distances.std():.1f} bits")
    print("| t | false pairs | rate | 95 % upper bound | log-linear fit | "
          + " | ".join(f"expected at {n:.0e} (bound / fit)" for n in SIZES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(SIZES))
    rows = []
    for t in THRESHOLDS:
        count = int((distances <= t).sum())
        bound = float(upper_bound(count, m))
        cells = [f"{n * (n - 1) / 2 * bound:.2g} / {expected_false_merges(n, t, tail):.2g}" for n in SIZES]
        print(f"| {t} | {count} | {count / m:.2e} | {bound:.2e} | {tail.rate(t):.2e} | " + " | ".join(cells) + " |")
        rows.append({"t": t, "false_pairs": count, "rate": count / m, "upper_bound": bound, "fit": tail.rate(t)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=5, help="tiles per side of each photo")
    parser.add_argument("--lowest", type=int, default=100,
                        help="closest pairs of tiles of different photos the tail is fitted over")
    args = parser.parse_args()
    config = load_config()

    whole = photos()
    photo_forms, _ = fingerprints(whole, config)
    tile_forms, kept = fingerprints(tiles(whole, args.grid), config)
    photo_d = pair_distances(photo_forms)
    all_tile_d = pair_distances(tile_forms)
    source = np.repeat(np.arange(len(whole)), args.grid * args.grid)[kept]
    first, second = np.triu_indices(len(tile_forms), 1)
    same_photo = source[first] == source[second]
    tile_d = all_tile_d[~same_photo]
    lowest = args.lowest
    tail = fit_tail(tile_d, lowest)

    print(f"# {config.hash.algo} {config.hash.bits} bits, trim_borders {config.hash.trim_borders}, "
          f"dihedral min over 8 forms; {len(photo_forms)} photos of {len(whole)} and {len(tile_forms)} tiles "
          f"({args.grid}x{args.grid}) pass min_quality {config.hash.min_quality}")
    print(f"tail fit over the lowest {lowest} pairs of tiles of different photos (upper 95 % bounds): "
          f"log10 p(<= t) = {tail.intercept:.3f} + {tail.slope:.4f} t")
    photo_rows = table("photos", photo_d, tail)
    tile_rows = table(f"tiles {args.grid}x{args.grid} of different photos", tile_d, tail)
    same_d = all_tile_d[same_photo]
    print(f"\ntiles of the same photo, apart: {len(same_d)} pairs, smallest {same_d.min()}; within "
          + ", ".join(f"{t}: {int((same_d <= t).sum())}" for t in THRESHOLDS[3:7]))

    rate = config.dedup.max_false_merge_rate
    print(f"\n## the t rule: budget {rate:g} false merges per image, ceiling dedup.threshold_t = "
          f"{config.dedup.threshold_t}")
    print("| images | t | expected false merges (fit) | budget |")
    print("|---|---|---|---|")
    rule = []
    for n in SIZES:
        t = threshold_for(n, rate, tail, config.dedup.threshold_t)
        expected = expected_false_merges(n, t, tail)
        print(f"| {n:.0e} | {t} | {expected:.3g} | {rate * n:g} |")
        rule.append({"n": n, "t": t, "expected_false_merges": expected})
    print(json.dumps({
        "algo": config.hash.algo, "bits": config.hash.bits, "trim_borders": config.hash.trim_borders,
        "photos": len(photo_forms), "tiles": len(tile_forms), "grid": args.grid,
        "photo_pairs": len(photo_d), "tile_pairs": len(tile_d), "same_photo_tile_pairs": int(same_photo.sum()),
        "photo_min": int(photo_d.min()), "tile_min": int(tile_d.min()),
        "same_photo_tile_min": int(same_d.min()) if len(same_d) else None,
        "false_pair_tail": [round(tail.intercept, 3), round(tail.slope, 4)],
        "photos_table": photo_rows, "tiles_table": tile_rows, "rule": rule,
    }))


if __name__ == "__main__":
    main()
