"""Reproduce the paper's figure 8: dedup accuracy against the number of classes k.

The paper (§7, Fig. 8) clusters the fingerprints with K-means and compares each
image only with the nearest class; its accuracy falls as k grows, because a
duplicate may sit in a neighbouring class. Here, on the labelled variant set
built by ``../shared/bench/transforms.py`` from ``../shared/data/dev`` (every
file of one original shares a group):

- fingerprints: the configured hash (``hash.algo``, with its dihedral forms when
  ``hash.dihedral``);
- classes: Hamming K-means (pipeline.cluster) with k classes over all
  fingerprints, each image in its nearest class;
- uploads: the files in a random order; an upload is eliminated (stored as a
  pointer) when the index finds an already stored image within
  ``dedup.threshold_t``, in ``paper`` mode (nearest class only, when within
  ``dedup.centre_threshold`` N, as §5 says), ``paper-noN`` (the nearest class
  whatever its distance: the figure's setting, which does not mention N) or
  ``exact`` mode (every class the triangle inequality cannot rule out);
  otherwise it is stored;
- scores, averaged over ``--repeats`` K-means seeds and upload orders: the
  paper's accuracy (5), ``(n - |n - m|) / n`` with n the duplicates in the set
  (files minus originals) and m the uploads eliminated; precision (eliminated
  uploads whose match shows the same original) and recall (correct
  eliminations over n).

    python scripts/paper_fig8.py [--set bench-out/set] [--ks 1,2,4,...] [--repeats 5]
                                 [--plot docs/paper_fig8.png]

The variant set is built into ``--set`` when it holds no ``truth.csv``. A PNG is
written when matplotlib is importable. Last line: one JSON object,
{column: {k: {accuracy, precision, recall}}}.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from imgdedup.jobs.hash import fingerprint_in_batches
from imgdedup.pipeline.cluster import assign, hamming_kmeans
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.index import ClusterIndex

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
#: Columns: (name, index mode, whether dedup.centre_threshold limits the nearest class).
MODES = (("paper", "paper", True), ("paper-noN", "paper", False), ("exact", "exact", False))
SETTINGS = {"plain": "plain hashes (as the paper)", "dihedral": "8 dihedral forms per upload (imgdedup)"}


def variant_set(folder: Path) -> tuple[list[Path], np.ndarray]:
    """Files of the labelled variant set and their group labels (built when missing)."""
    truth = folder / "truth.csv"
    if not truth.exists():
        subprocess.run([sys.executable, str(SHARED / "bench" / "transforms.py"), str(SHARED / "data" / "dev"),
                        str(folder)], check=True)
    with truth.open() as f:
        rows = list(csv.DictReader(f))
    groups = {g: i for i, g in enumerate(sorted({r["group"] for r in rows}))}
    return [folder / r["file"] for r in rows], np.array([groups[r["group"]] for r in rows])


def decide(order: np.ndarray, found: list, groups: np.ndarray) -> tuple[int, int]:
    """Replay uploads in ``order``: (uploads eliminated, eliminated with a same-original match)."""
    stored = np.zeros(len(order), dtype=bool)
    eliminated = correct = 0
    for i in order:
        matches = found[i]
        usable = matches.ids[stored[matches.ids.astype(np.int64)]]
        if len(usable):  # matches are nearest first: the first stored one is the pointer target
            eliminated += 1
            correct += int(groups[usable[0]] == groups[i])
        else:
            stored[i] = True
    return eliminated, correct


def scores(eliminated: int, correct: int, duplicates: int) -> dict:
    return {
        "accuracy": (duplicates - abs(duplicates - eliminated)) / duplicates,
        "precision": correct / eliminated if eliminated else 1.0,
        "recall": correct / duplicates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=REPO / "bench-out" / "set")
    parser.add_argument("--ks", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "paper_fig8.png")
    args = parser.parse_args()
    config = load_config(args.config)
    t, centre_threshold = config.dedup.threshold_t, config.dedup.centre_threshold

    files, groups = variant_set(args.set)
    algorithm = get_algorithm(config.hash.algo, size=config.hash.size, bits=config.hash.bits,
                              trim_borders=config.hash.trim_borders)
    batches = list(fingerprint_in_batches(files, algorithm, config, dihedral=True))
    fingerprints = np.concatenate([b.hashes for b in batches])
    # Files that fail to decode are left out (their error is printed on stderr).
    size = config.dask.partition_size
    groups = groups[np.concatenate([i * size + np.asarray(b.indices) for i, b in enumerate(batches)])]
    duplicates = len(groups) - len(np.unique(groups))
    settings = {"plain": fingerprints, "dihedral": np.concatenate([b.dihedral for b in batches])}
    ks = [int(v) for v in args.ks.split(",")]
    tables = {setting: accuracy_table(fingerprints, queries, groups, ks, args.repeats, t, centre_threshold)
              for setting, queries in settings.items()}

    print(f"{len(groups)} files, {len(np.unique(groups))} originals, n = {duplicates} duplicates; "
          f"{config.hash.algo} {config.hash.bits} bits, t = {t}, N = {centre_threshold}, "
          f"{args.repeats} K-means seeds and upload orders per k")
    for setting, table in tables.items():
        print(f"\nqueries: {SETTINGS[setting]}")
        print(f"{'':5s} | " + " | ".join(f"{name:^31s}" for name in table))
        print(f"{'k':>5s} | " + " | ".join(f"{'acc (5)':>9s} {'precision':>11s} {'recall':>9s}" for _ in table))
        for k in ks:
            print(f"{k:5d} | " + " | ".join(f"{rows[k]['accuracy']:9.3f} {rows[k]['precision']:11.3f} "
                                            f"{rows[k]['recall']:9.3f}" for rows in table.values()))
    _plot(tables, args.plot)
    print(json.dumps({setting: {name: {str(k): {m: round(v, 4) for m, v in row.items()} for k, row in rows.items()}
                                for name, rows in table.items()} for setting, table in tables.items()}))


def accuracy_table(fingerprints: np.ndarray, queries: np.ndarray, groups: np.ndarray, ks: list[int],
                   repeats: int, t: int, centre_threshold: int) -> dict:
    """{column: {k: scores}} for the stored fingerprints searched with ``queries`` (plain or dihedral)."""
    duplicates = len(groups) - len(np.unique(groups))
    table = {name: {} for name, _, _ in MODES}
    for k in ks:
        totals = {name: np.zeros(2) for name, _, _ in MODES}
        for repeat in range(repeats):
            centres = hamming_kmeans(fingerprints, k, seed=repeat).centres
            labels, _ = assign(fingerprints, centres)
            index = ClusterIndex.build(fingerprints, np.arange(len(fingerprints)), centres, labels)
            order = np.random.default_rng(repeat).permutation(len(fingerprints))
            for name, mode, limited in MODES:
                found = index.search(queries, t, mode=mode, centre_threshold=centre_threshold if limited else None)
                # An upload does not match itself: it is not stored yet when it is searched.
                found = [_without(m, i) for i, m in enumerate(found)]
                totals[name] += decide(order, found, groups)
        for name in totals:
            eliminated, correct = totals[name] / repeats
            table[name][k] = scores(eliminated, correct, duplicates)
    return table


def _without(matches, i):
    keep = matches.ids != i
    return type(matches)(matches.ids[keep], matches.distances[keep])


def _plot(tables: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(tables), figsize=(11, 4), sharey=True)
    for ax, (setting, table) in zip(axes, tables.items()):
        for colour, (name, _, _), style in zip(("C0", "C1", "C2"), MODES, ("o-", "^-.", "s--")):
            ks = list(table[name])
            ax.plot(ks, [100 * table[name][k]["accuracy"] for k in ks], style, color=colour,
                    label=f"{name}: accuracy (5)")
            ax.plot(ks, [100 * table[name][k]["precision"] for k in ks], style, color=colour, alpha=0.3,
                    label=f"{name}: precision")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of classes k")
        ax.set_title(SETTINGS[setting], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=8)
    fig.suptitle("Dedup accuracy against the number of classes (paper Fig. 8)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
