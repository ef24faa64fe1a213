"""``imgdedup demo``: a labelled sample set, deduplicated into a store by the bulk job.

The sample set is built from the real photos scikit-image ships with its
package (no download), each saved as an original plus re-encoded, scaled,
recoloured, turned, mirrored and cropped copies, with a ``truth.csv`` naming the
original each file came from. The demo then runs ``imgdedup bulk`` on it (a
local Dask cluster, a demo group key and a store, all under the output folder),
prints the run's summary and the duplicate groups the store now holds, with
precision and recall against the truth, writes the run's HTML report (with
thumbnails decrypted by the demo key) and says where it is.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs.bulk_commit import print_summary
from imgdedup.jobs.report import write_report
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import GroupKey, load_key_file, write_key_file
from imgdedup.pipeline.store import Store


# skimage.data loaders whose files ship inside the scikit-image package.
ORIGINALS: tuple[str, ...] = (
    "astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "moon", "text", "stereo_motorcycle",
)


def _crop(image: Image.Image, fraction: float = 0.02) -> Image.Image:
    dx, dy = round(image.width * fraction), round(image.height * fraction)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


# name -> (transform, file format). The original itself is stored as a JPEG at quality 95.
VARIANTS: dict[str, tuple[Callable[[Image.Image], Image.Image], str]] = {
    "jpeg50": (lambda im: im, "JPEG"),
    "half": (lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), "PNG"),
    "brighter": (lambda im: ImageEnhance.Brightness(im).enhance(1.3), "PNG"),
    "grayscale": (lambda im: im.convert("L"), "PNG"),
    "rot90": (lambda im: im.transpose(Image.Transpose.ROTATE_90), "PNG"),
    "mirror": (lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG"),
    "crop2": (_crop, "PNG"),
}
_SAVE = {"JPEG": (".jpg", {"quality": 50}), "PNG": (".png", {"compress_level": 1})}


@dataclass(frozen=True)
class SampleImage:
    """One file of the sample set: ``group`` names its original, ``variant`` how it was changed."""

    file: str
    group: str
    variant: str


def build_sample_set(out_dir: str | Path, originals: tuple[str, ...] = ORIGINALS) -> list[SampleImage]:
    """Write the labelled sample set under ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``images/`` (one original and one file per :data:`VARIANTS`
        entry for each name in ``originals``) and ``truth.csv`` (columns
        ``file``, ``group``, ``variant``; ``file`` relative to ``images/``).
    originals : tuple of str
        Names of :mod:`skimage.data` loaders.

    Returns
    -------
    list of SampleImage
        The rows of ``truth.csv``, in file order.
    """
    from skimage import data

    images_dir = Path(out_dir) / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for name in originals:
        pixels = getattr(data, name)()
        if name == "stereo_motorcycle":  # (left, right, disparity): the left view
            pixels = pixels[0]
        original = Image.fromarray(pixels).convert("RGB")
        original.save(images_dir / f"{name}.jpg", quality=95)
        samples.append(SampleImage(f"{name}.jpg", name, "original"))
        for variant, (transform, fmt) in VARIANTS.items():
            suffix, params = _SAVE[fmt]
            filename = f"{name}-{variant}{suffix}"
            transform(original).save(images_dir / filename, fmt, **params)
            samples.append(SampleImage(filename, name, variant))
    with open(Path(out_dir) / "truth.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["file", "group", "variant"])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(s) for s in samples)
    return samples


def pair_scores(pairs: np.ndarray, groups: list[str]) -> tuple[float, float]:
    """Precision and recall of found ``(i, j, ...)`` pairs against same-group truth."""
    groups = np.asarray(groups)
    _, sizes = np.unique(groups, return_counts=True)
    true_pairs = int((sizes * (sizes - 1) // 2).sum())
    correct = int((groups[pairs[:, 0]] == groups[pairs[:, 1]]).sum()) if len(pairs) else 0
    precision = correct / len(pairs) if len(pairs) else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    return precision, recall


def variant_recall(pairs: np.ndarray, names: list[str], samples: dict[str, SampleImage]) -> dict[str, tuple[int, int]]:
    """For each variant: how many originals were paired with their copy, out of how many."""
    index = {(samples[name].group, samples[name].variant): k for k, name in enumerate(names)}
    found_pairs = {(int(i), int(j)) for i, j in pairs[:, :2]}
    counts: dict[str, tuple[int, int]] = {}
    for (group, variant), k in index.items():
        original = index.get((group, "original"))
        if variant == "original" or original is None:
            continue
        found, total = counts.get(variant, (0, 0))
        counts[variant] = (found + ((min(k, original), max(k, original)) in found_pairs), total + 1)
    return counts


def store_groups(store: Store, names: dict[str, str]) -> list[list[str]]:
    """Duplicate groups the store holds (two images or more), as sorted file names.

    ``names`` maps a ``source`` column value to the name to print.
    """
    rows = store.read_table("fingerprints", columns=["image_id", "source", "duplicate_of"]).to_pylist()
    members: dict[str, list[str]] = {}
    for row in rows:
        members.setdefault(row["duplicate_of"] or row["image_id"], []).append(names.get(row["source"], row["source"]))
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])


def group_pairs(groups: list[list[str]], names: list[str]) -> np.ndarray:
    """Every pair of files that share a group, as ``(i, j)`` rows indexing ``names``, ``i < j``."""
    index = {name: k for k, name in enumerate(names)}
    pairs = [sorted((index[a], index[b])) for group in groups for a, b in itertools.combinations(group, 2)]
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        description="Build a labelled sample set from scikit-image's bundled photos, run the bulk job on it "
                    "into a store under the output folder and print the summary, the duplicate groups found "
                    "with precision and recall, and where the report is.",
    )
    parser.add_argument("--out-dir", metavar="DIR", help="where to write the sample set (default: config demo.out_dir)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    out_dir = Path(args.out_dir or config.demo.out_dir).resolve()
    samples = build_sample_set(out_dir)
    images_dir = out_dir / "images"
    print(f"sample set: {len(samples)} images ({len(ORIGINALS)} originals x {len(VARIANTS) + 1} versions) "
          f"in {images_dir}, truth in {out_dir / 'truth.csv'}")

    key_file, store_url = out_dir / "demo.key", str(out_dir / "store")
    key = load_key_file(key_file) if key_file.exists() else GroupKey.generate()
    if not key_file.exists():
        write_key_file(key_file, key)
    summary = run_bulk(str(images_dir), store_url, key, config, scheduler=config.dask.scheduler)
    print_summary(summary)

    by_file = {s.file: s for s in samples}
    names = [s.file for s in samples]
    # The source column holds the folder as given to the bulk job joined with each file's name.
    groups = store_groups(Store(store_url), {f"{images_dir}/{name}": name for name in names})
    print(f"duplicate groups found: {len(groups)}")
    for number, members in enumerate(groups, 1):
        print(f"  group {number} ({len(members)} images): {' '.join(members)}")
    pairs = group_pairs(groups, names)
    truth = [by_file[name].group for name in names]
    for i, j in pairs:
        if truth[i] != truth[j]:
            print(f"  false pair: {names[i]} ~ {names[j]}")
    precision, recall = pair_scores(pairs, truth)
    print(f"pairs: {len(pairs)} found, precision {precision:.3f}, recall {recall:.3f}")
    print("original matched to its copy, by variant: " + ", ".join(
        f"{variant} {found}/{total}" for variant, (found, total) in variant_recall(pairs, names, by_file).items()))
    print(f"store: {store_url} (demo group key: {key_file}); "
          f"report tables of this run: {store_url}/reports/{summary.run_id}/")
    report_dir = out_dir / "report"
    write_report(Store(store_url), report_dir, config, run_id=summary.run_id, key=key)
    print(f"report: {report_dir / 'report.html'} (open it in a browser; tables beside it), made by: "
          f"imgdedup report --store {store_url} --run {summary.run_id} --key {key_file} --out {report_dir}")
    return 1 if summary.errors else 0
