"""Throughput of decode + LBPH against ``imagehash.phash``, on one core, same files, same run.

    python scripts/bench_hash.py [--files 24] [--rounds 5] [--algo lbph] [--set hash.trim_borders=false]

Writes ~2-megapixel JPEGs (1600 x 1200, quality 90) made from scikit-image's
bundled photos into a temporary folder, then times, interleaved round by round:

- imgdedup: ``decode_image`` (whitelist, size guard, JPEG draft, EXIF, RGB) +
  ``algorithm.thumbnail`` per file, one ``hash_batch`` over the stacked thumbnails;
- imgdedup full: ``fingerprint_batch`` with dihedral variants and quality scores;
- imgdedup full + keys: the same with feature keys (``hash.feature_keypoints``),
  as the jobs run it;
- reference: ``imagehash.phash(Image.open(path))`` per file.

Threads of the numeric libraries are limited to one and the process is pinned to
one CPU. Prints images/s for each and the ratio; the last line is one JSON object.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported, so its BLAS starts single-threaded

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import imagehash  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from imgdedup.pipeline.config import load_config  # noqa: E402
from imgdedup.pipeline.hashing.algorithms import get_algorithm  # noqa: E402
from imgdedup.pipeline.hashing.decode import decode_image  # noqa: E402
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch  # noqa: E402

SIZE = (1600, 1200)
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
           "retina", "stereo_motorcycle", "camera", "moon", "coins", "text")


def write_test_files(folder: Path, count: int) -> list[Path]:
    """``count`` 1600 x 1200 JPEGs (q90): each bundled photo cropped to 4:3 at a few offsets, upscaled."""
    from skimage import data

    photos = []
    for name in SOURCES:
        pixels = getattr(data, name)()
        photos.append(Image.fromarray(pixels[0] if name == "stereo_motorcycle" else pixels).convert("RGB"))
    paths = []
    for k in range(count):
        photo = photos[k % len(photos)]
        # A different 4:3 window per pass over the photos, so no two files are the same picture.
        width = min(photo.width, photo.height * 4 // 3) * (10 - k // len(photos) % 3) // 10
        height = width * 3 // 4
        left = (photo.width - width) * (k // len(photos) % 3) // 2
        top = (photo.height - height) // 2
        window = photo.crop((left, top, left + width, top + height))
        path = folder / f"bench-{k:03d}.jpg"
        window.resize(SIZE, Image.Resampling.LANCZOS).save(path, quality=90)
        paths.append(path)
    return paths


def time_ours(paths, algorithm, decode_options) -> float:
    start = time.perf_counter()
    thumbs = np.stack([algorithm.thumbnail(decode_image(p, **decode_options)) for p in paths])
    algorithm.hash_batch(thumbs)
    return time.perf_counter() - start


def time_full(paths, algorithm, decode_options, feature_keypoints: int = 0) -> float:
    start = time.perf_counter()
    fingerprint_batch(paths, algorithm, dihedral=True, feature_keypoints=feature_keypoints, **decode_options)
    return time.perf_counter() - start


def time_imagehash(paths) -> float:
    start = time.perf_counter()
    for p in paths:
        imagehash.phash(Image.open(p))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--algo", default=None, help="imgdedup algorithm (default: config hash.algo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. hash.trim_borders=false (repeatable)")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config = load_config(overrides=args.set)
    algorithm = get_algorithm(args.algo or config.hash.algo, size=config.hash.size, bits=config.hash.bits,
                              trim_borders=config.hash.trim_borders)
    decode_options = dict(max_pixels=config.decode.max_pixels, formats=config.decode.formats,
                          draft_min_side=config.decode.draft_min_side)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_test_files(Path(tmp), args.files)
        megapixels = SIZE[0] * SIZE[1] / 1e6
        time_ours(paths[:2], algorithm, decode_options)  # warm caches and imports
        time_imagehash(paths[:2])
        time_full(paths[:2], algorithm, decode_options, config.hash.feature_keypoints)
        ours, full, keyed, reference = [], [], [], []
        for _ in range(args.rounds):
            ours.append(time_ours(paths, algorithm, decode_options))
            full.append(time_full(paths, algorithm, decode_options))
            keyed.append(time_full(paths, algorithm, decode_options, config.hash.feature_keypoints))
            reference.append(time_imagehash(paths))

    # Best round of each: the least disturbed by anything else on the machine.
    ours_rate = len(paths) / min(ours)
    full_rate = len(paths) / min(full)
    keyed_rate = len(paths) / min(keyed)
    reference_rate = len(paths) / min(reference)
    ratio = ours_rate / reference_rate
    print(f"{len(paths)} JPEGs of {SIZE[0]}x{SIZE[1]} ({megapixels:.2f} MP, q90), {args.rounds} rounds, one core")
    print(f"imgdedup decode+{algorithm.name} ({algorithm.bits} bits, draft_min_side "
          f"{config.decode.draft_min_side}): {ours_rate:8.1f} images/s")
    print(f"imgdedup fingerprint_batch (+dihedral, quality):            {full_rate:8.1f} images/s")
    print(f"imgdedup fingerprint_batch + {config.hash.feature_keypoints} keypoints' feature keys:    "
          f"{keyed_rate:8.1f} images/s ({keyed_rate / reference_rate:.2f}x imagehash)")
    print(f"imagehash.phash(Image.open(path)):                          {reference_rate:8.1f} images/s")
    print(f"ratio: {ratio:.2f}x")
    print(json.dumps({
        "lbph_vs_imagehash_ratio": round(ratio, 3),
        "algo": algorithm.name,
        "bits": algorithm.bits,
        "draft_min_side": config.decode.draft_min_side,
        "trim_borders": config.hash.trim_borders,
        "ours_images_per_s": round(ours_rate, 2),
        "fingerprint_batch_images_per_s": round(full_rate, 2),
        "full_vs_imagehash_ratio": round(full_rate / reference_rate, 3),
        "feature_keypoints": config.hash.feature_keypoints,
        "full_with_keys_images_per_s": round(keyed_rate, 2),
        "full_with_keys_vs_imagehash_ratio": round(keyed_rate / reference_rate, 3),
        "imagehash_phash_images_per_s": round(reference_rate, 2),
        "files": len(paths),
        "megapixels": megapixels,
        "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
