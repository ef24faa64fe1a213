"""Which verified-zone pairs the join's mih plan finds, on real edited copies: recall of the zone's candidates.

    python scripts/zone_candidates.py [--folder bench-out/zone-held-out-50]

The join resolves its mih plan to be exact at the direct t (the pigeonhole
bound) and searches up to the zone's top with it (``jobs/bulk_join.py``): a
pair in the zone (t, t_verify] is a candidate only when one of its substrings
differs in at most the plan's radius. This script hashes a labelled set
(``scripts/accuracy_verify.py`` builds one: 48 edits of each held-out original)
and, for the direct t, zone top and join plan the rule gives at 10^5, 10^6 and
10^7 images, counts the same-original pairs in the zone and the share the plan's
probes find (``substring_pairs`` over every position, the join's own kernel),
beside an exact scan of the same pairs. The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_bulk import read_truth  # noqa: E402
from edits import REPO  # noqa: E402

from imgdedup.jobs.in_memory import hash_files  # noqa: E402
from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.index.join import pair_distances  # noqa: E402
from imgdedup.pipeline.index.substrings import substring_pairs  # noqa: E402

SIZES = (10**5, 10**6, 10**7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=REPO / "bench-out" / "zone-held-out-50")
    args = parser.parse_args()
    group, _ = read_truth(args.folder)
    config = load_config()
    batch = hash_files(args.folder, config=config)
    names = [Path(n).name for n in batch.names]
    labels = np.array([group[n] for n in names])
    fingerprints, forms = batch.hashes, batch.dihedral
    i, j = np.triu_indices(len(names), 1)
    same = labels[i] == labels[j]
    pairs = np.stack([i[same], j[same]], axis=1)
    distances = pair_distances(fingerprints, forms, pairs)
    print(f"{len(names)} files, {len(pairs)} same-original pairs")
    print("| images | t | zone top | join plan (b, r) | exact up to | zone pairs | found by the plan | recall |")
    print("|---|---|---|---|---|---|---|---|")
    figures = {}
    for n in SIZES:
        t = max(config.dedup.threshold_for(n), 0)
        top = config.dedup.verify_threshold_for(n, t)
        plan = config.index.resolved(n, t, 8 * fingerprints.shape[1], forms.shape[1], join=True)
        in_zone = (distances > t) & (distances <= top)
        found = set()
        for position in range(8 * fingerprints.shape[1] // plan.substring_bits):
            found.update(map(tuple, substring_pairs(fingerprints, forms, position, plan.substring_bits,
                                                    plan.probe_radius, top).tolist()))
        hit = np.array([tuple(p) in found for p in pairs[in_zone].tolist()])
        exact_bound = (8 * fingerprints.shape[1] // plan.substring_bits) * (plan.probe_radius + 1) - 1
        recall = float(hit.mean()) if len(hit) else 1.0
        print(f"| 10^{int(np.log10(n))} | {t} | {top} | {plan.substring_bits}, {plan.probe_radius} | {exact_bound} "
              f"| {int(in_zone.sum())} | {int(hit.sum())} | {recall:.3f} |")
        figures[f"1e{int(np.log10(n))}"] = {"t": t, "zone_top": top, "plan": [plan.substring_bits, plan.probe_radius],
                                           "zone_pairs": int(in_zone.sum()), "found": int(hit.sum()),
                                           "recall": round(recall, 4)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
