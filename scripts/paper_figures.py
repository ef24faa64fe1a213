"""Reproduce the paper's Fig. 7 and Table 2 on the development set, plus precision/recall curves.

The paper (§7) defines dedup accuracy by its formula (5): with n the number of
duplicate images in the set and m the number the scheme actually eliminates,

    accuracy = (n - |n - m|) / n.

Our reading, on the labelled variant set that ``../shared/bench/transforms.py``
builds from ``../shared/data/dev`` (20 originals, 28 variants each):

- n = files - originals (every variant is a duplicate of its original);
- m = files the paper's upload protocol (§5) eliminates at threshold t: the files
  are uploaded one by one in a fixed random order (seed 0), and a file is
  eliminated when some file stored before it lies within t bits; otherwise it
  is stored. LBPH as imgdedup runs it (``lbph``, 256 bits) matches the
  upload's 8 dihedral forms against the stored plain hashes; the paper's
  literal LBPH (``lbph-paper``), aHash (SPSD) and pHash (CSPD) compare plain
  hashes, as the paper does;
- thresholds as a share of the hash length, so 64- and 256-bit hashes share one axis.

Formula (5) counts eliminations, not correct ones: a scheme that wrongly merges
two different originals while missing one true variant scores 100 %. The
pairwise precision/recall curves (all file pairs; a pair is predicted a
duplicate when its distance is at most t) show what (5) hides.

Fig. 8 (accuracy against the number of K-means classes) is made by
``scripts/paper_fig8.py``. Table 2 is printed by ``scripts/paper_table2.py``'s
own code, imported here.

    python scripts/paper_figures.py [--set bench-out/set] [--out docs/figures] [--skip-table2]

Writes ``fig7_accuracy.png``, ``precision_recall.png`` and
``precision_recall_vs_threshold.png`` into ``--out``; prints the tables; the
last line is one JSON object {algorithm: {best_accuracy, t_at_best, recall_at_precision_1}}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402

import paper_table2  # noqa: E402 - the sibling script, importable when run as scripts/paper_figures.py
from paper_fig8 import variant_set  # noqa: E402 - the labelled set, loaded (and built) as Fig. 8 does
from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.hashing.algorithms import get_algorithm  # noqa: E402
from imgdedup.pipeline.hashing.bits import dihedral_hamming, hamming  # noqa: E402
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Algorithm -> (label, dihedral matching).
ALGORITHMS = {"lbph": ("LBPH, imgdedup (256 bits, dihedral)", True),
              "lbph-paper": ("LBPH, paper's recipe (64 bits)", False),
              "ahash": ("aHash = SPSD (64 bits)", False),
              "phash": ("pHash = CSPD (64 bits)", False)}
#: Thresholds, as a share of the hash length.
SHARES = np.round(np.arange(0.0, 0.5001, 0.0078125), 6)


def distances(name: str, dihedral: bool, files: list[Path]) -> np.ndarray:
    """(n, n) int32 distances: uploads (rows, dihedral forms when used) against stored files (columns)."""
    decode = load_config().decode
    batch = fingerprint_batch(files, get_algorithm(name), dihedral=dihedral, max_pixels=decode.max_pixels,
                              formats=decode.formats, draft_min_side=decode.draft_min_side)
    if batch.errors:
        raise SystemExit(f"{name}: {len(batch.errors)} files failed to decode, e.g. {batch.errors[0]}")
    return dihedral_hamming(batch.dihedral, batch.hashes) if dihedral else hamming(batch.hashes, batch.hashes)


def eliminated(d: np.ndarray, order: np.ndarray, t: int) -> int:
    """m: files the upload protocol eliminates at threshold t, uploading in ``order``."""
    stored = np.zeros(len(order), dtype=bool)
    m = 0
    for i in order:
        if stored.any() and d[i, stored].min() <= t:
            m += 1
        else:
            stored[i] = True
    return m


def accuracy(n: int, m: int) -> float:
    """Formula (5) of the paper."""
    return (n - abs(n - m)) / n


def pair_curves(d: np.ndarray, groups: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise precision and recall at each threshold (each unordered pair once, its smaller distance)."""
    upper = np.triu_indices(len(groups), 1)
    pair_d = np.minimum(d, d.T)[upper]
    same = (groups[:, None] == groups[None, :])[upper]
    precision, recall = [], []
    for t in thresholds:
        predicted = pair_d <= t
        hits = np.count_nonzero(predicted & same)
        precision.append(hits / predicted.sum() if predicted.any() else 1.0)
        recall.append(hits / same.sum())
    return np.array(precision), np.array(recall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, default=REPO / "bench-out" / "set", help="labelled variant set")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    ap.add_argument("--skip-table2", action="store_true", help="do not print Table 2")
    a = ap.parse_args(argv)
    files, groups = variant_set(a.set)
    n = len(files) - len(set(groups))
    order = np.random.default_rng(0).permutation(len(files))
    print(f"# {len(files)} files, {len(set(groups))} originals, n = {n} duplicates; upload order: seed 0")
    results = {}
    for name, (label, dihedral) in ALGORITHMS.items():
        bits = get_algorithm(name).bits
        d = distances(name, dihedral, files)
        thresholds = np.round(SHARES * bits).astype(int)
        acc = np.array([accuracy(n, eliminated(d, order, t)) for t in thresholds])
        precision, recall = pair_curves(d, groups, thresholds)
        results[name] = {"label": label, "bits": bits, "thresholds": thresholds, "accuracy": acc,
                         "precision": precision, "recall": recall}
    a.out.mkdir(parents=True, exist_ok=True)
    _plot_accuracy(results, a.out / "fig7_accuracy.png")
    _plot_precision_recall(results, a.out / "precision_recall.png")
    _plot_against_threshold(results, a.out / "precision_recall_vs_threshold.png")

    print("\n## Fig. 7: accuracy by formula (5) against the threshold (share of the hash length)")
    shown = [0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.5]
    print("| scheme | " + " | ".join(f"t = {s:.3g}" for s in shown) + " | best (t) |")
    print("|---|" + "---|" * (len(shown) + 1))
    summary = {}
    for name, r in results.items():
        cells = [f"{r['accuracy'][np.argmin(abs(SHARES - s))]:.1%}" for s in shown]
        best = int(np.argmax(r["accuracy"]))
        exact = r["precision"] >= 1.0
        recall_at_1 = float(r["recall"][exact].max()) if exact.any() else 0.0
        print(f"| {r['label']} | " + " | ".join(cells) + f" | {r['accuracy'][best]:.1%} ({r['thresholds'][best]}) |")
        summary[name] = {"best_accuracy": round(float(r["accuracy"][best]), 4), "t_at_best": int(r["thresholds"][best]),
                         "recall_at_precision_1": round(recall_at_1, 4)}
    print("\n## Pairwise precision / recall at the threshold of best formula-(5) accuracy, and recall at precision 1")
    print("| scheme | t | precision | recall | recall at precision 1 |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        best = int(np.argmax(r["accuracy"]))
        print(f"| {r['label']} | {r['thresholds'][best]} | {r['precision'][best]:.3f} | {r['recall'][best]:.3f} "
              f"| {summary[name]['recall_at_precision_1']:.3f} |")
    lbph, t = results["lbph"], load_config().dedup.threshold_t
    at = int(np.flatnonzero(lbph["thresholds"] == t)[0])
    print(f"\nimgdedup's default, lbph at dedup.threshold_t = {t}: accuracy (5) {lbph['accuracy'][at]:.1%}, "
          f"pairwise precision {lbph['precision'][at]:.3f}, recall {lbph['recall'][at]:.3f}")
    summary["lbph"]["at_default_t"] = {"t": t, "accuracy": round(float(lbph["accuracy"][at]), 4),
                                       "precision": round(float(lbph["precision"][at]), 4),
                                       "recall": round(float(lbph["recall"][at]), 4)}
    if not a.skip_table2:
        print("\n## Table 2 (scripts/paper_table2.py)")
        paper_table2.main([])
    print(json.dumps(summary))
    return 0


def _plot_accuracy(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results.values():
        ax.plot(SHARES, 100 * r["accuracy"], label=r["label"])
    ax.set_xlabel("threshold t (share of the hash length)")
    ax.set_ylabel("dedup accuracy, formula (5) (%)")
    ax.set_title("Fig. 7: accuracy against the threshold (dev variant set)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_precision_recall(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results.values():
        ax.plot(r["recall"], r["precision"], marker=".", markersize=3, label=r["label"])
    ax.set_xlabel("recall (pairs of one original found)")
    ax.set_ylabel("precision (found pairs that are of one original)")
    ax.set_title("Pairwise precision / recall over the threshold")
    ax.grid(alpha=.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_against_threshold(results: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for r in results.values():
        left.plot(SHARES, r["precision"], label=r["label"])
        right.plot(SHARES, r["recall"], label=r["label"])
    left.set_ylabel("pairwise precision")
    right.set_ylabel("pairwise recall")
    for ax in (left, right):
        ax.set_xlabel("threshold t (share of the hash length)")
        ax.grid(alpha=.3)
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
