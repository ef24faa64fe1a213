"""The bulk job's verified zone and feature keys on a labelled held-out set: precision, recall and cost.

    python scripts/accuracy_verify.py [--limit 16] [--half held-out] [--folder DIR]

Builds (once) a labelled set from the first ``--limit`` originals of a half
of ``scripts/edits.py`` (held-out by default: constants were not chosen on it),
48 files per original, then runs the bulk job (local Dask cluster of two
threads, temporary store) nine times: at the t rule's t for the set's size and
with the direct t forced to what the rule gives at 10^5 and 10^6 images, each
with the verified zone off (``dedup.verify_up_to=0``), on (the zone the rule
gives at that size) without feature keys (``hash.feature_keypoints=0``), and
on with keys (``dedup.key_min_shared`` as the key rule gives it at that size).
Prints pairwise precision and recall (``accuracy_bulk.py``'s
scoring), recall per hard family, pairs verified and passed, and the verify
stage's seconds against the fingerprint stage's of the same run (a ratio, so
the machine's speed and load cancel). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_bulk import job_groups, pairwise_scores, read_truth  # noqa: E402
from edits import REPO, build_set, split_originals  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402

#: Families whose recall the zone is for (the others are at 0.98-1.00 within t already).
HARD_FAMILIES = ("caption", "chain", "crop", "overlay", "perspective", "rotate_small")


def runs(images: int) -> list[tuple[str, list[str]]]:
    """(label, overrides) of the nine runs."""
    dedup = load_config().dedup
    out = []
    for label, n in (("rule at the set's size", images), ("rule at 10^5", 10**5), ("rule at 10^6", 10**6)):
        t = max(dedup.threshold_for(n), 0)
        verify_t = dedup.verify_threshold_for(n, t)
        m = dedup.key_min_shared_for(n)
        # The set is small, so its own size would give a wider zone and fewer keys: the rule's are forced.
        forced = [f"dedup.threshold_t={t}"]
        zone = [*forced, f"dedup.verify_up_to={verify_t}"]
        out.append((f"{label}: t {t}, zone off", [*forced, "dedup.verify_up_to=0"]))
        out.append((f"{label}: t {t}, zone to {verify_t}, no keys", [*zone, "hash.feature_keypoints=0"]))
        out.append((f"{label}: t {t}, zone to {verify_t}, keys >= {m}", [*zone, f"dedup.key_min_shared={m}"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=16, help="originals of the half to use")
    parser.add_argument("--half", choices=("held-out", "tune"), default="held-out")
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    folder = args.folder or REPO / "bench-out" / f"zone-{args.half}-{args.limit}"
    if not (folder / "truth.csv").exists():
        tune, held_out = split_originals()
        build_set((held_out if args.half == "held-out" else tune)[:args.limit], folder)
    group, family = read_truth(folder)
    print(f"{len(group)} files, {args.limit} originals of the {args.half} half; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    print("| run | t | zone to | precision | recall | false pairs | key pairs | pairs verified | passed | "
          + " | ".join(HARD_FAMILIES) + " | fingerprint s | verify s | verify / fingerprint |")
    print("|---" * (11 + len(HARD_FAMILIES)) + "|")
    results = []
    for label, overrides in runs(len(group)):
        groups, summary = job_groups(folder, overrides)
        scores = pairwise_scores(groups, group, family)
        ratio = summary["seconds_verify"] / summary["seconds_fingerprint"]
        row = {"run": label, "t": int(summary["threshold_t"]), "verify_t": int(summary["verify_t"]),
               "precision": round(scores["precision"], 5), "recall": round(scores["recall"], 4),
               "false_pairs": scores["false_pairs"], "key_pairs": int(summary["key_pairs"]),
               "pairs_verified": int(summary["pairs_verified"]),
               "pairs_passed": int(summary["pairs_passed"]),
               "recall_by_family": {f: scores["recall_by_family"].get(f) for f in HARD_FAMILIES},
               "seconds_fingerprint": round(summary["seconds_fingerprint"], 2),
               "seconds_verify": round(summary["seconds_verify"], 2), "verify_over_fingerprint": round(ratio, 2)}
        results.append(row)
        zone = row["verify_t"] if row["verify_t"] > row["t"] else "-"
        print(f"| {label} | {row['t']} | {zone} | {row['precision']:.4f} | {row['recall']:.3f} | "
              f"{row['false_pairs']} | {row['key_pairs']} | {row['pairs_verified']} | {row['pairs_passed']} | "
              + " | ".join(f"{row['recall_by_family'][f]:.2f}" for f in HARD_FAMILIES)
              + f" | {row['seconds_fingerprint']:.1f} | {row['seconds_verify']:.1f} | {ratio:.2f} |", flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")
    print(json.dumps({"files": len(group), "originals": args.limit, "half": args.half, "runs": results}))


if __name__ == "__main__":
    main()
