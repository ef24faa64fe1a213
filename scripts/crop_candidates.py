"""Which candidate generator finds crops for the verifier: whole fingerprints, region fingerprints, local-feature keys.

    python scripts/crop_candidates.py [--limit 50] [--half held-out] [--random-crops 4]

The verifier (``pipeline/hashing/verify.py``) passes crops when it is asked;
what loses them is that a cropped copy's whole-picture fingerprint lies beyond
the verified zone, so no pair is ever put to it. This script measures, on one
half of the photos, how often each candidate generator would put an
original-copy pair to the verifier, at **equal cost**: every generator's
threshold is the loosest at which it selects no more pairs of different photos
than the whole fingerprint does at ``dedup.verify_up_to`` (88 bits), since each
such pair is a verification to pay for and a chance of a false accept.

Generators:

- ``whole``: the 256-bit LBPH with dihedral forms, as the jobs store it (the
  zone's candidates today);
- ``regions 2``: beside it, fingerprints of the centre 80 % and the centred
  square of the picture inside its borders; a pair's distance is the smallest
  of whole-whole and region-whole either way;
- ``regions 21``: the same with 21 regions (centre and four corners at 90, 80,
  70 and 60 % of each side, and the centred square);
- ``keys 32``: feature keys as the package computes them
  (``pipeline/hashing/feature_keys.py``: ORB on the grey picture at a long side
  of 256, ``hash.feature_keypoints`` keypoints, 4 pyramid levels), the first
  four 32-bit words of each descriptor, each tagged with its position; a pair's
  score is the number of keys the two pictures share;
- ``keys 48``: the same with five 48-bit words per descriptor.

Copies: the labelled set's crop, small-rotation and chain families
(``scripts/edits.py``), scored original against variant, and random crops made
here (each keeps 60-95 % of each side at a random place, saved as JPEG q90):
the set's own crops are a few fixed boxes, which a region grid can be chosen to
hit exactly; random crops show what a grid does for crops nobody chose.

Cost: µs per image of each generator's extraction on the decoded pictures
(thumbnails and hashes for regions, grey resize and ORB for keys). For keys it
also prints how many keys pairs of different photos share in all, against what
uniform keys would give: the work a key join does beyond the copies, which
grows with the square of the collection. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_families import cross_distances  # noqa: E402
from edits import REPO, build_set, split_originals  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.hashing.algorithms import get_algorithm  # noqa: E402
from imgdedup.pipeline.hashing.borders import border_box  # noqa: E402
from imgdedup.pipeline.hashing import feature_keys  # noqa: E402
from imgdedup.pipeline.hashing.decode import decode_image  # noqa: E402
from imgdedup.pipeline.hashing.verify import orb_features  # noqa: E402

#: Region boxes as (left, top, right, bottom) shares of the picture inside its borders; None: the centred square.
REGIONS_2 = {"c80": (0.1, 0.1, 0.9, 0.9), "square": None}
REGIONS_21 = {"square": None} | {
    f"{corner}{round(100 * s)}": ((1 - s) * fx, (1 - s) * fy, (1 - s) * fx + s, (1 - s) * fy + s)
    for s in (0.9, 0.8, 0.7, 0.6)
    for corner, (fx, fy) in {"c": (0.5, 0.5), "tl": (0, 0), "tr": (1, 0), "bl": (0, 1), "br": (1, 1)}.items()}
#: Key settings: bits per word and words per descriptor (ORB as the package runs it for feature keys).
KEY_WORDS = {"keys 32": (32, 4), "keys 48": (48, 5)}
#: A key shared by more images than this is ignored (a stop word: flat patches, text), as a key join would.
MAX_POSTING = 100


def region_thumbnail(picture: Image.Image, box, algorithm) -> np.ndarray:
    """Thumbnail of one region of ``picture`` inside its borders; ``box`` in shares, None: the centred square."""
    left, top, right, bottom = border_box(picture.convert("F"))
    width, height = right - left, bottom - top
    if box is None:
        side = min(width, height)
        x0, y0 = left + (width - side) / 2, top + (height - side) / 2
        edges = (x0, y0, x0 + side, y0 + side)
    else:
        edges = (left + box[0] * width, top + box[1] * height, left + box[2] * width, top + box[3] * height)
    return algorithm.thumbnail(picture.crop(tuple(round(e) for e in edges)))


def descriptor_keys(descriptors: np.ndarray, word_bits: int, words: int) -> np.ndarray:
    """Sorted unique uint64 keys: the first ``words`` ``word_bits``-bit words of each descriptor, tagged by place."""
    bits = np.unpackbits(descriptors, axis=1)[:, :word_bits * words].reshape(len(descriptors), words, word_bits)
    values = (bits.astype(np.uint64) << np.arange(word_bits - 1, -1, -1, dtype=np.uint64)).sum(axis=-1)
    return np.unique(values | (np.arange(words, dtype=np.uint64) << np.uint64(word_bits)))


def shared_key_counts(keys: list[np.ndarray]) -> np.ndarray:
    """``(n, n)`` int32: keys shared by each pair of images (keys in more than ``MAX_POSTING`` images left out)."""
    n = len(keys)
    flat = np.concatenate(keys)
    owner = np.repeat(np.arange(n), [len(k) for k in keys])
    order = np.argsort(flat, kind="stable")
    flat, owner = flat[order], owner[order]
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, len(flat)])
    counts = np.zeros((n, n), np.int32)
    kept = (lengths > 1) & (lengths <= MAX_POSTING)
    for start, length in zip(starts[kept], lengths[kept]):
        members = owner[start:start + length]
        first, second = np.triu_indices(int(length), 1)
        np.add.at(counts, (members[first], members[second]), 1)
    return counts + counts.T


def random_crops(originals: list[Path], per_original: int, seed: int = 11) -> list[tuple[str, bytes]]:
    """(group, JPEG bytes) of ``per_original`` random crops of each original (60-95 % of each side)."""
    rng = random.Random(seed)
    out = []
    for gi, path in enumerate(originals):
        im = Image.open(path).convert("RGB")
        im.thumbnail((1024, 1024))
        for _ in range(per_original):
            width, height = (round(side * rng.uniform(0.6, 0.95)) for side in im.size)
            x0, y0 = rng.randint(0, im.width - width), rng.randint(0, im.height - height)
            buffer = io.BytesIO()
            im.crop((x0, y0, x0 + width, y0 + height)).save(buffer, "JPEG", quality=90)
            out.append((f"g{gi:05d}", buffer.getvalue()))
    return out


def extract(pictures: Iterable[Image.Image], config) -> tuple[dict[str, np.ndarray], dict[str, list],
                                                              dict[str, float]]:
    """Dihedral hashes ``(n, 8, nbytes)`` of the whole pictures and every region, the keys of each
    key setting, and each generator's extraction cost in µs per image (pictures are decoded one at a time)."""
    whole = get_algorithm("lbph", size=config.hash.size, bits=config.hash.bits, trim_borders=True)
    plain = get_algorithm("lbph", size=config.hash.size, bits=config.hash.bits, trim_borders=False)
    thumbs = {name: [] for name in ["whole", *REGIONS_21]}
    seconds = dict.fromkeys(["whole", "regions 2", "regions 21", "orb"], 0.0)
    descriptors = []
    for picture in pictures:
        start = time.perf_counter()
        thumbs["whole"].append(whole.thumbnail(picture))
        seconds["whole"] += time.perf_counter() - start
        for name, box in REGIONS_21.items():
            start = time.perf_counter()
            thumbs[name].append(region_thumbnail(picture, box, plain))
            spent = time.perf_counter() - start
            seconds["regions 21"] += spent
            seconds["regions 2"] += spent if name in REGIONS_2 else 0.0
        start = time.perf_counter()
        descriptors.append(orb_features(picture, keypoints=config.hash.feature_keypoints, side=feature_keys.SIDE,
                                        levels=feature_keys.LEVELS).descriptors)
        seconds["orb"] += time.perf_counter() - start
    hashes = {}
    for name, stack in thumbs.items():
        start = time.perf_counter()
        hashes[name] = whole.dihedral_batch(np.stack(stack))
        spent = time.perf_counter() - start
        seconds["whole" if name == "whole" else "regions 21"] += spent
        seconds["regions 2"] += spent if name in REGIONS_2 else 0.0
    keys = {}
    for setting, (word_bits, words) in KEY_WORDS.items():
        start = time.perf_counter()
        keys[setting] = [descriptor_keys(d, word_bits, words) for d in descriptors]
        seconds[setting] = seconds["orb"] + time.perf_counter() - start
    cost = {name: 1e6 * s / len(descriptors) for name, s in seconds.items() if name != "orb"}
    return hashes, keys, cost


def region_distances(hashes: dict[str, np.ndarray], regions) -> np.ndarray:
    """``(n, n)`` smallest of whole-whole and region-whole (either way) distances over ``regions``."""
    forms = hashes["whole"]
    best = cross_distances(forms[:, 0], forms)
    for name in regions:
        cross = cross_distances(hashes[name][:, 0], forms)
        best = np.minimum(best, np.minimum(cross, cross.T))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=50, help="originals of the half to use")
    parser.add_argument("--half", choices=("held-out", "tune"), default="held-out")
    parser.add_argument("--random-crops", type=int, default=4, help="random crops per original")
    args = parser.parse_args()

    config = load_config()
    tune, held_out = split_originals()
    originals = (held_out if args.half == "held-out" else tune)[:args.limit]
    folder = REPO / "bench-out" / f"zone-{args.half}-{args.limit}"
    if not (folder / "truth.csv").exists():
        build_set(originals, folder)
    with open(folder / "truth.csv") as f:
        rows = list(csv.DictReader(f))
    decode = dict(max_pixels=config.decode.max_pixels, formats=config.decode.formats,
                  draft_min_side=config.decode.draft_min_side)
    crops = random_crops(originals, args.random_crops)
    sources = [folder / r["file"] for r in rows] + [data for _, data in crops]
    groups = np.array([r["group"] for r in rows] + [group for group, _ in crops])
    families = np.array([r["family"] for r in rows] + ["random_crop"] * len(crops))
    n = len(sources)

    hashes, keys, cost = extract((decode_image(source, name="picture", **decode) for source in sources), config)
    scores = {"whole": -region_distances(hashes, ()), "regions 2": -region_distances(hashes, REGIONS_2),
              "regions 21": -region_distances(hashes, REGIONS_21)}
    for setting, per_image in keys.items():
        scores[setting] = shared_key_counts(per_image)

    first, second = np.triu_indices(n, 1)
    different = groups[first] != groups[second]
    original_of = {g: i for i, (g, f) in enumerate(zip(groups, families)) if f == "orig"}
    copies = {family: np.array([i for i in range(n) if families[i] == family])
              for family in ("crop", "random_crop", "rotate_small", "chain")}
    budget_pairs = int((scores["whole"][first, second][different] >= -config.dedup.verify_up_to).sum())
    print(f"# {n} pictures ({len(original_of)} {args.half} originals, {args.random_crops} random crops each); "
          f"{int(different.sum()):,} pairs of different photos, {budget_pairs} of them within "
          f"{config.dedup.verify_up_to} bits of whole fingerprints: every generator's threshold selects at most that many")
    header = ["generator", "threshold", "different-photo pairs", "µs/image", *copies]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    results = {}
    for name, score in scores.items():
        negatives = np.sort(score[first, second][different])[::-1]
        # the highest score level s with at most budget_pairs negatives scoring >= s
        levels = np.unique(score[first, second])
        allowed = [s for s in levels if (negatives >= s).sum() <= budget_pairs]
        threshold = int(min(allowed))
        recall = {family: float(np.mean([score[i, original_of[groups[i]]] >= threshold for i in rows_]))
                  for family, rows_ in copies.items()}
        shown = f"<= {-threshold} bits" if name.startswith(("whole", "regions")) else f">= {threshold} keys"
        results[name] = {"threshold": shown, "different_pairs": int((negatives >= threshold).sum()),
                         "us_per_image": round(cost[name], 0), "recall": {k: round(v, 3) for k, v in recall.items()}}
        cells = [name, shown, str(results[name]["different_pairs"]), f"{cost[name]:.0f}",
                 *(f"{recall[f]:.2f}" for f in copies)]
        print("| " + " | ".join(cells) + " |")
    for setting, per_image in keys.items():
        count = np.array([len(k) for k in per_image])
        word_bits, words = KEY_WORDS[setting]
        # uniform keys: each pair of pictures shares (keys per place)^2 / 2^word_bits keys at each place
        uniform = words * (count.mean() / words) ** 2 / 2.0 ** word_bits * int(different.sum())
        negatives = scores[setting][first, second][different]
        shared = int(negatives.sum())
        tail = {m: int((negatives >= m).sum()) for m in range(1, 11)}
        results[setting] |= {"keys_per_image": round(float(count.mean()), 0), "different_photo_shared_keys": shared,
                             "uniform_keys_would_share": round(uniform, 1), "different_pairs_sharing_at_least": tail}
        print(f"{setting}: pairs of different photos sharing at least m keys: {tail}")
        print(f"{setting}: {count.mean():.0f} keys per image ({8 * count.mean() / 1024:.1f} kB); pairs of different "
              f"photos share {shared:,} keys in all, {uniform:,.1f} if keys were uniform: the work a key join does "
              f"beyond the copies grows as n^2 times that")
    print(json.dumps({"half": args.half, "pictures": n, "budget_pairs": budget_pairs, "generators": results}))


if __name__ == "__main__":
    main()
