"""Which copy each ``dedup.keep`` policy keeps, on groups holding a JPEG at q=90 and at q=50 of the same size.

    python scripts/keep_policy.py [PHOTOS ...] [--max-side 800] [--set section.key=value ...]

Each photo (default: ``../shared/data/dev`` and ``../shared/data/distinct``)
is scaled to ``--max-side`` and written three times: JPEG q=90, JPEG q=50 at the
same size, and a half-size PNG. Which of the two JPEGs comes first in the
listing is drawn at random per photo (seed 0), so a rule that ends on "the
earliest" keeps q=50 in about half of the groups. The bulk job runs once per
policy (local Dask cluster, throw-away key, a store in a temporary folder); for every group
holding both JPEGs the script counts which file is its canonical. Then it
re-elects a store built with ``largest`` under ``best`` and counts again.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
from pathlib import Path

from distributed import Client, LocalCluster
from PIL import Image

from imgdedup.jobs.bulk import run_bulk
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.store import Store

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = [REPO.parent / "shared" / "data" / "dev", REPO.parent / "shared" / "data" / "distinct"]


def build_set(photos: list[Path], folder: Path, max_side: int) -> int:
    """Write the three copies of every photo under ``folder/<n>/``; return the number of photos."""
    rng = random.Random(0)
    for n, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        image.thumbnail((max_side, max_side))
        group = folder / f"{n:04d}"
        group.mkdir(parents=True)
        first, second = ("a", "b") if rng.random() < 0.5 else ("b", "a")
        for quality, prefix in ((90, first), (50, second)):
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            (group / f"{prefix}-q{quality}.jpg").write_bytes(buffer.getvalue())
        image.resize((image.width // 2, image.height // 2)).save(group / "half.png")
    return len(photos)


def kept(store: Store) -> dict[str, int]:
    """Groups holding both JPEGs, counted by the file their canonical is (``q90``, ``q50``, ``other``)."""
    rows = store.read_table("fingerprints", columns=["image_id", "source", "duplicate_of"]).to_pylist()
    name = {r["image_id"]: r["source"].rsplit("/", 1)[-1] for r in rows}
    members: dict[str, set[str]] = {}
    for r in rows:
        members.setdefault(r["duplicate_of"] or r["image_id"], set()).add(name[r["image_id"]])
    counts = {"q90": 0, "q50": 0, "other": 0, "groups": 0}
    for canonical, names in members.items():
        if any(n.endswith("q90.jpg") for n in names) and any(n.endswith("q50.jpg") for n in names):
            counts["groups"] += 1
            which = name[canonical]
            counts["q90" if which.endswith("q90.jpg") else "q50" if which.endswith("q50.jpg") else "other"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--max-side", type=int, default=800)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    folders = args.photos or DEFAULT_PHOTOS
    photos = sorted(p for f in folders for p in (f.glob("*.jpg") if f.is_dir() else [f]))
    key = GroupKey.generate()
    results = {}
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        source = Path(tmp) / "photos"
        n = build_set(photos, source, args.max_side)
        for keep in ("best", "largest", "earliest"):
            url = str(Path(tmp) / f"store-{keep}")
            config = load_config(overrides=[*args.overrides, f"dedup.keep={keep}"])
            run_bulk(str(source), url, key, config, client=client)
            results[keep] = kept(Store(url))
            if keep == "largest":
                summary = run_bulk(str(source), url, key, load_config(overrides=args.overrides), client=client,
                                   re_elect=True)
                results["largest, then --re-elect under best"] = {**kept(Store(url)),
                                                                   "re_elected_rows": int(summary["re_elected"])}
    print(f"{n} photos, each as JPEG q=90 and q=50 of one size and a half-size PNG")
    for policy, counts in results.items():
        print(f"  {policy:36s} groups with both JPEGs {counts['groups']:4d}: keeps q=90 in {counts['q90']}, "
              f"q=50 in {counts['q50']}, another file in {counts['other']}")
    print(json.dumps({"photos": n, **results}))


if __name__ == "__main__":
    main()
