"""Reproduce the paper's Table 2: hash bits changed under rotation.

The paper (§7, Table 2) rotates the IVC-LAR originals and reports, per scheme,
the mean, max and min number of hash bits that change between an image and its
rotated copy (LBPH 116.12 / 240 / 84, SPSD = aHash 11 / 16 / 2, CSPD = pHash
92.16 / 128 / 27). It names neither the angles nor the hash lengths. Our reading:

- originals: every image in ``../shared/data/dev``;
- rotations: the quarter turns 90°, 180°, 270° (exact, ``Image.transpose``) and
  small angles 2°, 5°, 10°, 15°, 30°, 45° (bilinear ``Image.rotate``, same canvas,
  uncovered corners black), each image against its own rotated copy;
- changed bits: Hamming distance of the plain hashes, as the paper counts them;
  beside it, for quarter turns, the distance under dihedral matching (min over
  the 8 forms), which imgdedup uses and which the paper does not have;
- the share of the hash that changed (bits / length), since the lengths differ
  (aHash, pHash, lbph-paper 64 bits; lbph 256).

    python scripts/paper_table2.py [--originals DIR]

Last line: one JSON object, {algorithm: {rotation set: {mean, max, min, mean_fraction}}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.bits import hamming

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "dev"
ALGORITHMS = {"lbph-paper": "lbph-paper", "lbph": "lbph", "ahash": "aHash (SPSD)", "phash": "pHash (CSPD)"}
QUARTER_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
SMALL_ANGLES = (2, 5, 10, 15, 30, 45)


def rotations(image: Image.Image) -> dict[int, Image.Image]:
    out = {angle: image.transpose(op) for angle, op in QUARTER_TURNS.items()}
    out.update({angle: image.rotate(angle, resample=Image.Resampling.BILINEAR) for angle in SMALL_ANGLES})
    return out


def changed_bits(name: str, originals: list[Image.Image]) -> dict[str, np.ndarray]:
    """Bits changed per (image, angle), by rotation set."""
    algo = get_algorithm(name)
    plain = algo.hash_batch(np.stack([algo.thumbnail(im) for im in originals]))
    changed: dict[str, list[int]] = {"quarter turns": [], "small angles": [], "quarter turns, dihedral": []}
    for i, image in enumerate(originals):
        turned = rotations(image)
        thumbs = np.stack([algo.thumbnail(im) for im in turned.values()])
        forms = algo.dihedral_batch(thumbs)
        for (angle, _), form in zip(turned.items(), forms):
            d = hamming(plain[i:i + 1], form)[0]
            changed["quarter turns" if angle in QUARTER_TURNS else "small angles"].append(int(d[0]))
            if angle in QUARTER_TURNS:
                changed["quarter turns, dihedral"].append(int(d.min()))
    changed["all rotations"] = changed["quarter turns"] + changed["small angles"]
    return {key: np.array(values) for key, values in changed.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--originals", type=Path, default=DEV)
    a = ap.parse_args(argv)
    paths = sorted(p for p in a.originals.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    originals = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in paths]
    print(f"# Table 2 reading: {len(originals)} originals from {a.originals}; quarter turns "
          f"{sorted(QUARTER_TURNS)}, small angles {list(SMALL_ANGLES)} degrees")
    print("| scheme | bits | rotations | mean | max | min | mean share of bits |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, label in ALGORITHMS.items():
        bits = get_algorithm(name).bits
        summary[name] = {}
        for group, d in changed_bits(name, originals).items():
            row = {"mean": round(float(d.mean()), 2), "max": int(d.max()), "min": int(d.min()),
                   "mean_fraction": round(float(d.mean()) / bits, 3)}
            summary[name][group] = row
            print(f"| {label} | {bits} | {group} | {row['mean']:.2f} | {row['max']} | {row['min']} "
                  f"| {row['mean_fraction']:.1%} |")
    print("| paper: LBPH | ? | rotation | 116.12 | 240 | 84 | |")
    print("| paper: SPSD (aHash) | ? | rotation | 11.00 | 16 | 2 | |")
    print("| paper: CSPD (pHash) | ? | rotation | 92.16 | 128 | 27 | |")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
