"""``imgdedup demo``: a labelled sample set, fingerprinted and deduplicated on the defaults.

The sample set is built from the real photos scikit-image ships with its
package (no download), each saved as an original plus re-encoded, scaled,
recoloured, turned, mirrored and cropped copies, with a ``truth.csv`` naming the
original each file came from. The demo fingerprints the set with the configured
algorithm, pairs files within ``dedup.threshold_t`` (through the dihedral
variants when ``hash.dihedral`` is on), and prints the duplicate groups it finds
with precision and recall against the truth.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from jobs.hash import fingerprint_in_batches
from pipeline.config import Config
from pipeline.hashing.algorithms import get_algorithm
from pipeline.hashing.bits import dihedral_hamming, hamming


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


def duplicate_pairs(hashes: np.ndarray, dihedral: np.ndarray | None, threshold: int) -> np.ndarray:
    """Pairs of hashes within ``threshold`` bits, directly or through a dihedral variant.

    Parameters
    ----------
    hashes : ndarray of uint8, shape (n, nbytes)
    dihedral : ndarray of uint8, shape (n, 8, nbytes), or None
    threshold : int
        t, the largest Hamming distance that marks a duplicate.

    Returns
    -------
    ndarray of int64, shape (p, 3)
        Rows ``(i, j, distance)`` with ``i < j``, sorted.
    """
    distances = hamming(hashes, hashes) if dihedral is None else dihedral_hamming(hashes, dihedral)
    distances = np.minimum(distances, distances.T)
    i, j = np.nonzero(np.triu(distances <= threshold, k=1))
    return np.column_stack([i, j, distances[i, j]]).astype(np.int64)


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


def connected_groups(pairs: np.ndarray, n: int) -> list[list[int]]:
    """Groups of indices linked by ``pairs`` (only groups of two or more), each sorted."""
    parent = list(range(n))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, j in pairs[:, :2]:
        parent[root(int(i))] = root(int(j))
    members: dict[int, list[int]] = {}
    for k in range(n):
        members.setdefault(root(k), []).append(k)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="build a labelled sample set and find its duplicates",
        description="Build a labelled sample set from scikit-image's bundled photos, fingerprint it "
                    "and print the duplicate groups found, with precision and recall.",
    )
    parser.add_argument("--out-dir", metavar="DIR", help="where to write the sample set (default: config demo.out_dir)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    out_dir = Path(args.out_dir or config.demo.out_dir)
    samples = build_sample_set(out_dir)
    images_dir = out_dir / "images"
    print(f"sample set: {len(samples)} images ({len(ORIGINALS)} originals x {len(VARIANTS) + 1} versions) "
          f"in {images_dir}, truth in {out_dir / 'truth.csv'}")

    algorithm = get_algorithm(config.hash.algo, size=config.hash.size, bits=config.hash.bits)
    dihedral = config.hash.dihedral
    batches = list(fingerprint_in_batches([images_dir / s.file for s in samples], algorithm, config,
                                          dihedral=dihedral, names=[s.file for s in samples]))
    names = [name for b in batches for name in b.names]
    by_file = {s.file: s for s in samples}
    hashes = np.concatenate([b.hashes for b in batches])
    variants = np.concatenate([b.dihedral for b in batches]) if dihedral else None
    quality = np.concatenate([b.quality for b in batches])

    # Images with too little detail are fingerprinted but kept out of automatic dedup.
    eligible = np.flatnonzero(quality >= config.hash.min_quality)
    for k in np.flatnonzero(quality < config.hash.min_quality):
        print(f"held out (quality {quality[k]} < {config.hash.min_quality}): {names[k]}")
    pairs = duplicate_pairs(hashes[eligible], None if variants is None else variants[eligible],
                            config.dedup.threshold_t)
    pairs[:, :2] = eligible[pairs[:, :2]]
    print(f"fingerprints: {algorithm.name}, {algorithm.bits} bits, dihedral matching "
          f"{'on' if dihedral else 'off'}, duplicate when distance <= {config.dedup.threshold_t}")

    groups = connected_groups(pairs, len(names))
    print(f"duplicate groups found: {len(groups)}")
    for number, members in enumerate(groups, 1):
        print(f"  group {number} ({len(members)} images): {' '.join(names[k] for k in members)}")
    truth = [by_file[name].group for name in names]
    for i, j, distance in pairs:
        if truth[i] != truth[j]:
            print(f"  false pair: {names[i]} ~ {names[j]} (distance {distance})")
    precision, recall = pair_scores(pairs, truth)
    print(f"pairs: {len(pairs)} found, precision {precision:.3f}, recall {recall:.3f}")
    print("original matched to its copy, by variant: " + ", ".join(
        f"{variant} {found}/{total}" for variant, (found, total) in variant_recall(pairs, names, by_file).items()))
    return 1 if any(b.errors for b in batches) else 0
