"""End-to-end accuracy of ``imgdedup bulk`` on a labelled variant set, against the bench's anchor hashes.

    python ../shared/bench/transforms.py ../shared/data/dev /tmp/variants
    python scripts/accuracy_bulk.py /tmp/variants [--set section.key=value ...]

Runs the bulk job (local Dask cluster, a throw-away key, a temporary store) on
the set, turns its duplicate groups into pairs and compares them with
``truth.csv``: pairwise precision, recall and false-positive rate (false pairs
over all different-original pairs), and recall per transform family (original
and variant in one group). Then hashes the set with every anchor of
``../shared/bench/score.py`` and reports each anchor's recall at a threshold
whose false-positive rate does not exceed the job's (at most half a pair when
the job has none). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster
from PIL import Image

from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs.bulk_commit import BulkSummary
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.store import Store

REPO = Path(__file__).resolve().parents[1]
SCORE = REPO.parent / "shared" / "bench" / "score.py"


def job_groups(folder: Path, overrides: list[str]) -> tuple[list[set[str]], BulkSummary]:
    """The bulk job's groups over ``folder``, as sets of file names relative to it, and the run's summary.

    The store is a temporary folder: fsspec's memory filesystem is one dict per
    process, whose listing can meet a blob writer thread's insert.
    """
    with tempfile.TemporaryDirectory(prefix="accuracy-bulk-") as url, \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        summary = run_bulk(str(folder), url, GroupKey.generate(), load_config(overrides=overrides), client=client)
        rows = Store(url).read_table("fingerprints", columns=["image_id", "source", "duplicate_of"]).to_pylist()
    prefix = str(folder.resolve()).rstrip("/") + "/"
    members: dict[str, set[str]] = {}
    for row in rows:
        members.setdefault(row["duplicate_of"] or row["image_id"], set()).add(row["source"].split(prefix, 1)[-1])
    return list(members.values()), summary


def read_truth(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``({file: group}, {file: family})`` from ``folder/truth.csv``."""
    with open(folder / "truth.csv", newline="") as f:
        truth = list(csv.DictReader(f))
    return {r["file"]: r["group"] for r in truth}, {r["file"]: r["family"] for r in truth}


def pairwise_scores(groups: list[set[str]], group: dict[str, str], family: dict[str, str]) -> dict:
    """Pairwise precision, recall, false pairs and FPR of ``groups``, and recall per family (original ↔ variant)."""
    found = {tuple(sorted(p)) for g in groups for p in itertools.combinations(sorted(g & group.keys()), 2)}
    files = sorted(group)
    true_pairs = {(a, b) for a, b in itertools.combinations(files, 2) if group[a] == group[b]}
    negatives = len(files) * (len(files) - 1) // 2 - len(true_pairs)
    correct = len(found & true_pairs)
    job = {
        "precision": correct / len(found) if found else 1.0,
        "recall": correct / len(true_pairs),
        "false_pairs": len(found) - correct,
        "fpr": (len(found) - correct) / negatives,
        "negatives": negatives,
    }
    originals = {group[f]: f for f in files if family[f] == "orig"}
    by_family: dict[str, list[bool]] = {}
    for f in files:
        if family[f] != "orig":
            by_family.setdefault(family[f], []).append(tuple(sorted((f, originals[group[f]]))) in found)
    job["recall_by_family"] = {fam: round(float(np.mean(v)), 3) for fam, v in sorted(by_family.items())}
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", type=Path, help="folder written by ../shared/bench/transforms.py")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    group, family = read_truth(args.variants)
    job = pairwise_scores(job_groups(args.variants, args.overrides)[0], group, family)
    files, negatives = sorted(group), job.pop("negatives")
    print(f"bulk job: precision {job['precision']:.4f}, recall {job['recall']:.4f}, "
          f"{job['false_pairs']} false pairs of {negatives} (FPR {job['fpr']:.2e})")
    print("  recall by family: " + ", ".join(f"{k} {v:.2f}" for k, v in job["recall_by_family"].items()))

    spec = importlib.util.spec_from_file_location("bench_score", SCORE)
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    fpr = max(job["fpr"], 0.5 / negatives)
    groups, families = np.array([group[f] for f in files]), np.array([family[f] for f in files])
    anchors = {}
    for name, hasher in score.anchor_hashers().items():
        hashes = np.stack([hasher(Image.open(args.variants / f).convert("RGB")) for f in files])
        result = score.evaluate(score.pair_distances(hashes), groups, families, fpr, hashes.shape[-1] * 8)
        anchors[name] = round(float(result["recall_at_fpr"]), 4)
        print(f"  anchor {name}: recall {anchors[name]:.4f} at FPR <= {fpr:.2e} (t = {result['t_at_fpr']})")
    best = max(anchors, key=anchors.get)
    print(json.dumps({**{k: round(v, 6) if isinstance(v, float) else v for k, v in job.items()},
                      "anchor_fpr": fpr, "anchors": anchors, "best_anchor": best,
                      "recall_minus_best_anchor": round(job["recall"] - anchors[best], 4)}))


if __name__ == "__main__":
    main()
