"""Ablation of LBPH's open choices on the near-duplicate bench (docs/lbph.md).

Builds the labelled variant set with ``../shared/bench/transforms.py`` (or reuses
it), decodes every file as ``imgdedup hash`` does (``decode_image`` with the
configured limits and JPEG draft scale), hashes it with each LBPH variant, scores plain and dihedral matching
with the bench's own ``evaluate`` (ROC AUC, recall at FPR, best F1, per-family
recall) and prints one Markdown table. With ``--score NAME...`` it also writes
``file,hash,dihedral`` CSV tables for the named variants and runs the bench's
``score.py`` on them beside its anchors (aHash, pHash, dHash, wHash, pHash-256,
PDQ, PDQ-dihedral), which is the table docs/lbph.md quotes. With ``--thresholds
T...`` it prints, for each ``--score`` variant, how many different-original pairs
and what share of same-original pairs fall within each t (dihedral matching),
which is how ``dedup.threshold_t`` is chosen.

    python scripts/ablate_lbph.py [--set bench-out/set] [--originals DIR|skimage] [--score lbph lbph-paper ...]
                                  [--thresholds 40 64 80]

Last line: one JSON object with each variant's dihedral AUC and recall.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.hashing.algorithms import get_algorithm, lbph_algorithm
from imgdedup.pipeline.hashing.bits import to_hex
from imgdedup.pipeline.hashing.decode import decode_image
from imgdedup.pipeline.hashing.lbph import DEFAULT, PAPER, LbphParams, default_params

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / "shared" / "bench"
DEV = REPO.parent / "shared" / "data" / "dev"


def _load_scorer():
    spec = importlib.util.spec_from_file_location("bench_score", BENCH / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variants() -> dict[str, LbphParams]:
    """Named LBPH variants: from the paper's recipe one change at a time, then around the default."""
    median = dict(selection="zigzag", threshold="median", sigma=2.0)
    out = {
        # the paper's recipe and single changes to it (64 bits)
        "lbph-paper": PAPER,
        "paper+median": replace(PAPER, threshold="median"),
        "paper+zigzag-noDC+median": replace(PAPER, selection="zigzag", threshold="median"),
        "paper+riu2": replace(PAPER, method="uniform"),
        # which plane the DCT sees, 256 bits
        "lbp(default)-256": LbphParams(method="default", coeffs=(256,), **median),
        "lbp(riu2)-256": LbphParams(method="uniform", coeffs=(256,), **median),
        "lbp(ror)-256": LbphParams(method="ror", coeffs=(256,), **median),
        "lbp(nri_uniform)-256": LbphParams(method="nri_uniform", coeffs=(256,), **median),
        "gray-256": LbphParams(planes=("gray",), coeffs=(256,), **median),
        "gray-256-square16": LbphParams(planes=("gray",), coeffs=(256,), sigma=2.0, selection="square",
                                        threshold="median"),
        "gray-256-mean": replace(LbphParams(planes=("gray",), coeffs=(256,), **median), threshold="mean"),
        # both planes concatenated: how the 256 bits are shared
        "lbp96+gray160": replace(DEFAULT, coeffs=(96, 160)),
        "lbp128+gray128": replace(DEFAULT, coeffs=(128, 128)),
        "lbp160+gray96 (default)": DEFAULT,
        "lbp192+gray64": replace(DEFAULT, coeffs=(192, 64)),
        "lbp224+gray32": replace(DEFAULT, coeffs=(224, 32)),
        # around the default
        "default-128": default_params(bits=128),
        "default-64": default_params(bits=64),
        "default-mean": replace(DEFAULT, threshold="mean"),
        "default-N64": replace(DEFAULT, size=64),
        "default-N64-sigma4": replace(DEFAULT, size=64, sigma=4.0),
    }
    for method in ("uniform", "ror", "nri_uniform"):
        out[f"default-{method}"] = replace(DEFAULT, method=method)
    for sigma in (0.0, 1.0, 1.5, 3.0):
        out[f"default-sigma{sigma:g}"] = replace(DEFAULT, sigma=sigma)
    return out


# scikit-image's bundled photos (no download): a second, held-out set of originals.
# `cat` is left out: it is `chelsea` again.
SKIMAGE_ORIGINALS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                     "retina", "camera", "coins", "moon", "page", "text", "brick", "grass", "gravel",
                     "colorwheel", "logo", "horse", "clock")


def write_skimage_originals(folder: Path) -> Path:
    import skimage.data
    folder.mkdir(parents=True, exist_ok=True)
    for name in SKIMAGE_ORIGINALS:
        pixels = getattr(skimage.data, name)()
        if pixels.dtype == bool:
            pixels = pixels.astype(np.uint8) * 255
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}.png")
    return folder


def load_set(set_dir: Path, originals: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[Image.Image]]:
    if not (set_dir / "truth.csv").exists():
        if str(originals) == "skimage":
            originals = write_skimage_originals(set_dir.parent / "skimage-originals")
        subprocess.run([sys.executable, str(BENCH / "transforms.py"), str(originals), str(set_dir)], check=True)
    with open(set_dir / "truth.csv") as f:
        rows = list(csv.DictReader(f))
    files = [r["file"] for r in rows]
    decode = load_config().decode
    images = [decode_image(set_dir / name, max_pixels=decode.max_pixels, formats=decode.formats,
                           draft_min_side=decode.draft_min_side) for name in files]
    return files, np.array([r["group"] for r in rows]), np.array([r["family"] for r in rows]), images


def print_thresholds(scorer, sets: dict[str, np.ndarray], groups: np.ndarray, thresholds: list[int]) -> None:
    """Markdown table: per variant and t, different-original pairs within t and recall (dihedral matching)."""
    upper = np.triu_indices(len(groups), 1)
    same = groups[upper[0]] == groups[upper[1]]
    print()
    print("| variant | t | different-original pairs within t | of | recall |")
    print("|---|---|---|---|---|")
    for name, forms in sets.items():
        distances = scorer.pair_distances(forms)[upper]
        closest = int(distances[~same].min())
        for t in thresholds:
            false_pairs = int((distances[~same] <= t).sum())
            print(f"| {name} | {t} | {false_pairs} | {int((~same).sum())} | {(distances[same] <= t).mean():.3f} |")
        print(f"| {name} | closest different-original pair: {closest} | | | |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, default=REPO / "bench-out" / "set")
    ap.add_argument("--originals", type=Path, default=DEV,
                    help="originals the set is built from if missing; 'skimage' for scikit-image's sample photos")
    ap.add_argument("--fpr", type=float, default=1e-4)
    ap.add_argument("--score", nargs="*", default=[], metavar="NAME",
                    help="variants (or lbph / lbph-paper / phash / ahash / dhash) to run score.py on")
    ap.add_argument("--thresholds", nargs="*", type=int, default=[], metavar="T",
                    help="with --score: false pairs and recall of each scored variant within each t")
    a = ap.parse_args(argv)
    scorer = _load_scorer()
    files, groups, families, images = load_set(a.set, a.originals)

    algos = {name: lbph_algorithm(name, params) for name, params in variants().items()}
    for name in a.score:
        if name not in algos:
            algos[name] = get_algorithm(name)
    thumbs: dict[tuple, np.ndarray] = {}
    sets = {}
    for name, algo in algos.items():
        key = (getattr(algo._thumbnail, "func", algo._thumbnail), algo.thumb_shape)
        if key not in thumbs:
            thumbs[key] = np.stack([algo.thumbnail(im) for im in images])
        sets[name] = algo.dihedral_batch(thumbs[key])

    fam_names = sorted(set(families) - {"orig"})
    print(f"# {len(files)} files, {len(set(groups))} groups, FPR target {a.fpr}")
    header = ["variant", "bits", "match", "AUC", "t@fpr", "recall@fpr", "bestF1"] + fam_names
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    summary = {}
    for name, algo in algos.items():
        for match, hashes in (("plain", sets[name][:, 0]), ("dihedral", sets[name])):
            r = scorer.evaluate(scorer.pair_distances(hashes), groups, families, a.fpr, algo.bits)
            cells = [name, str(algo.bits), match, f"{r['auc']:.4f}", str(r["t_at_fpr"]),
                     f"{r['recall_at_fpr']:.3f}", f"{r['f1best']:.3f}"] + [f"{r['fam'][f]:.2f}" for f in fam_names]
            print("| " + " | ".join(cells) + " |", flush=True)
            summary[f"{name}/{match}"] = {"auc": round(float(r["auc"]), 4),
                                          "recall_at_fpr": round(float(r["recall_at_fpr"]), 4)}

    if a.score:
        tables = []
        for name in a.score:
            path = a.set.parent / f"hashes-{name}.csv"
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["file", "hash", "dihedral"])
                for fname, forms in zip(files, sets[name]):
                    w.writerow([fname, to_hex(forms[0]), ",".join(to_hex(forms))])
            tables += ["--project-hashes", f"{name}={path}"]
        print()
        subprocess.run([sys.executable, str(BENCH / "score.py"), str(a.set), "--fpr", str(a.fpr), *tables],
                       check=True)
    if a.score and a.thresholds:
        print_thresholds(scorer, {name: sets[name] for name in a.score}, groups, a.thresholds)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
