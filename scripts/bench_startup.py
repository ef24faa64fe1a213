"""Start-up cost of the ``imgdedup`` command line, against the bare interpreter, same run.

    python scripts/bench_startup.py [--images 10000] [--repeat 5] [--cache DIR]

Each command runs as a new process (the console script of this environment),
``--repeat`` times; the median wall time is reported beside the median of
``python -c pass`` measured in the same run:

- ``imgdedup --help``: what every command pays before it starts (target: at
  most 0.3 s over the bare interpreter);
- ``imgdedup keygen``: a command that needs no store, no Dask and no Numba;
- ``imgdedup get ID --out FILE``: one download by id from a local store of
  ``--images`` images (target: at most 1.5 s end to end at 10 000 images);
- ``imgdedup bulk`` of 4 images into a fresh store: the bulk job's fixed cost,
  local Dask cluster start and first compile included (target: at most 3 s over
  the bare interpreter).

The ``--images`` store is built once by the bulk job from small tiles of
scikit-image's bundled photos and kept under ``--cache`` (a temporary folder by
default). The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from skimage import data as skdata

BIN = Path(sys.executable).parent
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera", "moon", "page", "horse", "hubble_deep_field")


def _wall(command: list[str], repeat: int, **kwargs) -> float:
    """Median wall seconds of ``repeat`` runs of ``command`` (each must exit 0)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)
        times.append(time.perf_counter() - started)
        if done.returncode:
            raise SystemExit(f"{' '.join(map(str, command))} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return statistics.median(times)


def _tiles(count: int, folder: Path) -> None:
    """``count`` small JPEGs (48-96 pixels), random crops of the bundled photos, none repeated."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.fromarray(getattr(skdata, name)()).convert("RGB")) for name in PHOTOS]
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(48, 97))
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        Image.fromarray(photo[y:y + side, x:x + side]).save(folder / f"tile{i:06d}.jpg", quality=90)


def _store_of(images: int, cache: Path, key: Path) -> Path:
    """A local store holding ``images`` images committed by the bulk job (built once per cache)."""
    store = cache / f"store-{images}"
    if not (store / "_commits").is_dir():
        source = cache / f"tiles-{images}"
        _tiles(images, source)
        subprocess.run([BIN / "imgdedup", "bulk", str(source), "--store", str(store), "--key", str(key)],
                       check=True, stdout=subprocess.DEVNULL)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="images in the store `get` reads from")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the median is reported")
    parser.add_argument("--cache", type=Path, help="folder kept between runs for the store (default: temporary)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        cache = args.cache or scratch
        cache.mkdir(parents=True, exist_ok=True)
        key = cache / "bench.key"
        if not key.exists():
            subprocess.run([BIN / "imgdedup", "keygen", "--out", str(key)], check=True, stdout=subprocess.DEVNULL)
        store = _store_of(args.images, cache, key)
        image_id = pq.read_table(store / "fingerprints", columns=["image_id"]).column(0)[0].as_py()
        small = scratch / "four"
        _tiles(4, small)
        env = dict(os.environ, IMGDEDUP_KEY_FILE=str(key))

        python = _wall([sys.executable, "-c", "pass"], args.repeat)
        help_ = _wall([BIN / "imgdedup", "--help"], args.repeat)
        keygen = _wall([BIN / "imgdedup", "keygen", "--out", str(scratch / "k.key"), "--force"], args.repeat)
        get = _wall([BIN / "imgdedup", "get", image_id, "--store", str(store), "--out", str(scratch / "got.jpg")],
                    args.repeat, env=env)
        # Each bulk run writes a fresh store, so every run pays the whole job.
        bulk = statistics.median(
            _wall([BIN / "imgdedup", "bulk", str(small), "--store", str(scratch / f"bulk-{run}")], 1, env=env)
            for run in range(args.repeat))

    rows = [("python -c pass", python, None), ("imgdedup --help", help_, 0.3),
            ("imgdedup keygen", keygen, None), (f"imgdedup get (store of {args.images})", get, None),
            ("imgdedup bulk (4 images)", bulk, 3.0)]
    print(f"{'command':<36} {'seconds':>8} {'over python':>12} {'target over python':>19}")
    for name, seconds, target in rows:
        print(f"{name:<36} {seconds:8.3f} {seconds - python:12.3f} {'' if target is None else f'<= {target}':>19}")
    print(f"get end to end {get:.3f} s (target <= 1.5 s)")
    print(json.dumps({
        "python_s": round(python, 4), "help_s": round(help_, 4), "help_over_python_s": round(help_ - python, 4),
        "keygen_s": round(keygen, 4), "get_s": round(get, 4), "get_store_images": args.images,
        "bulk_fixed_s": round(bulk, 4), "bulk_fixed_over_python_s": round(bulk - python, 4),
    }))


if __name__ == "__main__":
    main()
