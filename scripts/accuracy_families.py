"""Per-family recall of LBPH on held-out photos, with and without each accuracy lever, and each lever's cost.

    python scripts/accuracy_families.py [--set bench-out/families] [--half held-out|tune] [--limit N]

Builds (or reuses) a labelled set with ``scripts/edits.py``: the bench's
families plus padding, letterbox, caption bars, perspective, chained edits,
more small rotations, crops and overlays, from the held-out half of
``../shared/data/distinct`` + ``../shared/data/dev`` (odd positions in file-name
order; the tune half is the even positions). Every file is decoded as the jobs
do (``decode_image`` with the configured limits and JPEG draft scale) and hashed
by each lever's LBPH with dihedral forms; the bench's own ``score.py`` scores
them (``evaluate``: ROC AUC over same- vs different-original pairs, the
threshold ``t@fpr`` that keeps the false-positive rate at or under 1e-4, recall
there overall and per family for original-variant pairs), and recall at the
configured ``dedup.threshold_t`` is printed beside it.

Levers:
- ``lbph``: the thumbnail of the whole decoded picture (the fingerprint before
  border trimming);
- ``lbph+trim``: uniform borders and letterbox bars left out of the thumbnail
  (``hash.trim_borders``, ``pipeline/hashing/borders.py``);
- ``lbph+trim+centre``: a second fingerprint of the centre 80 % of the picture
  (inside its borders) beside the whole one; a pair's distance is the smallest
  of whole-whole and centre-whole either way, so a crop matches its original's
  centre. Not in the package: measured here first.

Cost: each lever's thumbnail step timed on the same decoded pictures, in µs per
image (the batch kernels are the same for every lever).

Groups: for each lever, the pairs within t grouped as the bulk job groups them
today (connected components, one canonical each by the component rule) and as
star groups (``pipeline/groups.py``), scored by pairwise precision and recall
against the truth (two files in one group form a predicted pair). The last line
is one JSON object.
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

from edits import REPO, bench_module, build_set, split_originals  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.groups import star_groups  # noqa: E402
from imgdedup.pipeline.hashing.algorithms import get_algorithm  # noqa: E402
from imgdedup.pipeline.hashing.borders import border_box  # noqa: E402
from imgdedup.pipeline.hashing.decode import decode_image  # noqa: E402
from imgdedup.pipeline.index.join import connected_components  # noqa: E402
from imgdedup.pipeline.keep import choose_canonicals  # noqa: E402

# Share of each side the centre-region fingerprint keeps (a 20 % crop keeps 80 %).
CENTRE = 0.8


def _centre_thumbnail(picture, algorithm) -> np.ndarray:
    """Thumbnail of the centre ``CENTRE`` of the picture inside its borders."""
    left, top, right, bottom = border_box(picture.convert("F"))
    dx, dy = (right - left) * (1 - CENTRE) / 2, (bottom - top) * (1 - CENTRE) / 2
    return algorithm.thumbnail(picture.crop((round(left + dx), round(top + dy),
                                             round(right - dx), round(bottom - dy))))


def hash_levers(folder: Path, files: list[str], config) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray]:
    """Dihedral hashes ``(n, 8, nbytes)`` of every file for each thumbnail (``lbph``, ``lbph+trim``,
    ``centre``), each thumbnail's µs/image, and each decoded picture's pixel count ``(n,)``."""
    decode_options = dict(max_pixels=config.decode.max_pixels, formats=config.decode.formats,
                          draft_min_side=config.decode.draft_min_side)
    whole = get_algorithm("lbph", size=config.hash.size, bits=config.hash.bits, trim_borders=False)
    trimmed = get_algorithm("lbph", size=config.hash.size, bits=config.hash.bits, trim_borders=True)
    steps = {"lbph": whole.thumbnail, "lbph+trim": trimmed.thumbnail,
             "centre": lambda picture: _centre_thumbnail(picture, whole)}
    thumbs = {name: [] for name in steps}
    seconds = dict.fromkeys(steps, 0.0)
    pixels = []
    for name in files:
        picture = decode_image(folder / name, **decode_options)
        pixels.append(picture.width * picture.height)
        for step, thumbnail in steps.items():
            start = time.perf_counter()
            thumbs[step].append(thumbnail(picture))
            seconds[step] += time.perf_counter() - start
    hashes = {step: whole.dihedral_batch(np.stack(t)) for step, t in thumbs.items()}
    return hashes, {step: 1e6 * s / len(files) for step, s in seconds.items()}, np.array(pixels)


def cross_distances(plain: np.ndarray, forms: np.ndarray, chunk: int = 128) -> np.ndarray:
    """``(n, n)`` int32: row i's plain hash ``(n, nbytes)`` against column j's nearest form ``(n, 8, nbytes)``."""
    out = np.empty((len(plain), len(forms)), dtype=np.int32)
    for start in range(0, len(plain), chunk):
        rows = plain[start:start + chunk, None, None, :]
        out[start:start + chunk] = np.bitwise_count(rows ^ forms[None]).sum(axis=-1, dtype=np.int32).min(axis=-1)
    return out


def lever_distances(hashes: dict[str, np.ndarray], score) -> dict[str, np.ndarray]:
    """Pair distances ``(n, n)`` under each lever.

    ``lbph+trim+centre``: the smallest of the whole-picture distance and the
    distances between one side's centre region and the other's whole picture
    (so a crop of the centre matches the original's centre).
    """
    out = {lever: score.pair_distances(hashes[lever]) for lever in ("lbph", "lbph+trim")}
    cross = cross_distances(hashes["centre"][:, 0], hashes["lbph+trim"])
    out["lbph+trim+centre"] = np.minimum(out["lbph+trim"], np.minimum(cross, cross.T))
    return out


def recall_at(distances: np.ndarray, groups: np.ndarray, t: int) -> float:
    """Share of same-original pairs within ``t``."""
    iu = np.triu_indices(len(groups), 1)
    same = groups[iu[0]] == groups[iu[1]]
    return float((distances[iu][same] <= t).mean())


def group_scores(distances: np.ndarray, groups: np.ndarray, pixels: np.ndarray, t: int) -> dict[str, dict]:
    """Pairwise precision and recall of connected components and of star groups over the pairs within ``t``."""
    n = len(groups)
    first, second = np.triu_indices(n, 1)
    near = distances[first, second] <= t
    pairs = np.stack([first[near], second[near]], axis=1)
    component = connected_components(n, pairs)
    order = np.arange(n)
    canonical = choose_canonicals(component, pixels, order, np.zeros(n, dtype=bool))
    rank = np.argsort(np.lexsort((order, -pixels)))
    stars = star_groups(canonical, rank, pairs, distances[first[near], second[near]], t)
    truth = groups[first] == groups[second]
    out = {}
    for name, labels in (("components", canonical), ("stars", stars.canonical)):
        predicted = labels[first] == labels[second]
        hits = int((predicted & truth).sum())
        out[name] = {"precision": hits / max(1, int(predicted.sum())), "recall": hits / int(truth.sum()),
                     "false_pairs": int((predicted & ~truth).sum())}
    out["stars"]["split"] = int(stars.split.sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=REPO / "bench-out" / "families")
    parser.add_argument("--half", choices=("held-out", "tune"), default="held-out")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N originals of the half")
    parser.add_argument("--fpr", type=float, default=1e-4)
    args = parser.parse_args()

    config = load_config()
    tune, held_out = split_originals()
    originals = held_out if args.half == "held-out" else tune
    if args.limit:
        originals = originals[:args.limit]
    folder = args.set / args.half
    if not (folder / "truth.csv").exists():
        build_set(originals, folder)
    with open(folder / "truth.csv") as f:
        rows = list(csv.DictReader(f))
    files = [r["file"] for r in rows]
    groups = np.array([r["group"] for r in rows])
    families = np.array([r["family"] for r in rows])

    score = bench_module("score")
    hashes, cost, pixels = hash_levers(folder, files, config)
    cost["lbph+trim+centre"] = cost["lbph+trim"] + cost["centre"]
    t = config.dedup.threshold_t
    results = {}
    for lever, distances in lever_distances(hashes, score).items():
        result = score.evaluate(distances, groups, families, args.fpr, config.hash.bits)
        result["recall_at_t"] = recall_at(distances, groups, t)
        result["us_per_image"] = cost[lever]
        result["groups"] = group_scores(distances, groups, pixels, t)
        results[lever] = result

    names = sorted(next(iter(results.values()))["fam"])
    print(f"# {len(files)} files, {len(set(groups))} {args.half} originals, FPR target {args.fpr}, "
          f"t = {t} for recall@t")
    header = ["lever", "AUC", "t@fpr", "recall@fpr", f"recall@t{t}", "thumb µs/img"] + names
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for lever, r in results.items():
        cells = [lever, f"{r['auc']:.4f}", str(r["t_at_fpr"]), f"{r['recall_at_fpr']:.3f}",
                 f"{r['recall_at_t']:.3f}", f"{r['us_per_image']:.0f}"] + [f"{r['fam'][n]:.2f}" for n in names]
        print("| " + " | ".join(cells) + " |")
    print(f"\nGroups of the pairs within t = {t}, pairwise against the truth:")
    print("| lever | grouping | precision | recall | false pairs | split for review |")
    print("|---|---|---|---|---|---|")
    for lever, r in results.items():
        for grouping, g in r["groups"].items():
            print(f"| {lever} | {grouping} | {g['precision']:.4f} | {g['recall']:.3f} | {g['false_pairs']} | "
                  f"{g.get('split', '')} |")
    base = results["lbph"]["us_per_image"]
    print(json.dumps({
        "half": args.half, "files": len(files), "originals": int(len(set(groups))), "fpr": args.fpr, "t": t,
        "levers": {lever: {"auc": round(float(r["auc"]), 4), "t_at_fpr": int(r["t_at_fpr"]),
                           "recall_at_fpr": round(float(r["recall_at_fpr"]), 4),
                           "recall_at_t": round(r["recall_at_t"], 4),
                           "us_per_image": round(r["us_per_image"], 1),
                           "extra_us_per_image": round(r["us_per_image"] - base, 1),
                           "families": {n: round(v, 3) for n, v in r["fam"].items()},
                           "groups": r["groups"]}
                   for lever, r in results.items()},
    }))


if __name__ == "__main__":
    main()
