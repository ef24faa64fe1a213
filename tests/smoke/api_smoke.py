"""Smoke test of an installed imgdedup: a plain script, not a pytest module.

    python api_smoke.py

scripts/ci_wheel_smoke.sh runs it with the python of a fresh venv that holds the
built wheel, from a folder outside the repository, so that what it imports is
the installed package and nothing of the source tree. The first check makes
sure of that. A failed check raises AssertionError saying what went wrong (a
traceback and exit status 1); all passed, the script prints one line and exits 0.
"""
from __future__ import annotations

import contextlib
import importlib.resources
import io
import sys
import tempfile
import tomllib
from pathlib import Path

from PIL import Image
from skimage import data

import imgdedup
from imgdedup.jobs import cli
from imgdedup.pipeline.config import load_config


def check_installed() -> None:
    """imgdedup comes from site-packages and holds its layers and its packaged defaults."""
    package = Path(imgdedup.__file__).resolve().parent
    assert "site-packages" in package.parts, f"imgdedup imported from {package}, not from an installed wheel"
    for layer in ("pipeline", "jobs", "conf"):
        assert (package / layer / "__init__.py").is_file(), f"the wheel has no imgdedup/{layer}/"
    assert importlib.resources.files("imgdedup.conf").joinpath("default.toml").is_file()


def check_packaged_defaults() -> None:
    """load_config() with no file reads the packaged default.toml, and --set style overrides apply."""
    packaged = tomllib.loads(importlib.resources.files("imgdedup.conf").joinpath("default.toml").read_text())
    config = load_config()
    assert (config.hash.algo, config.hash.bits) == (packaged["hash"]["algo"], packaged["hash"]["bits"])
    assert config.dedup.threshold_t == packaged["dedup"]["threshold_t"]
    assert load_config(overrides=["hash.algo=phash"]).hash.algo == "phash"


def _photos(folder: Path) -> list[Path]:
    """Two of scikit-image's bundled photos and a half-size JPEG copy of the first."""
    astronaut, cat = Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())
    paths = [folder / "astronaut.png", folder / "astronaut-half.jpg", folder / "chelsea.jpg"]
    astronaut.save(paths[0])
    astronaut.resize((astronaut.width // 2, astronaut.height // 2)).save(paths[1], quality=80)
    cat.save(paths[2], quality=90)
    return paths


def check_hash_command(folder: Path) -> None:
    """`imgdedup hash` through cli.main: one row per named file, in order; the copy lands near its original, the cat far."""
    paths = _photos(folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["hash", *map(str, paths)])
    assert status == 0, f"imgdedup hash exited {status}"
    header, *lines = printed.getvalue().splitlines()
    rows = [dict(zip(header.split("\t"), line.split("\t"))) for line in lines]
    assert [Path(r["path"]).name for r in rows] == [p.name for p in paths], rows
    bits = {Path(r["path"]).stem: int(r["hash"], 16) for r in rows}
    assert all(len(r["hash"]) * 4 == load_config().hash.bits for r in rows)
    t = load_config().dedup.threshold_t
    near = (bits["astronaut"] ^ bits["astronaut-half"]).bit_count()
    far = (bits["astronaut"] ^ bits["chelsea"]).bit_count()
    assert near <= t < far, f"copy {near} bits apart, other photo {far}, threshold {t}"


def check_public_api(tmp: Path) -> None:
    """The front door works from the wheel: an in-memory run, then ingest into a store and a download by id."""
    samples = imgdedup.build_sample_set(tmp / "api", originals=("astronaut", "chelsea"))
    groups = imgdedup.find_duplicates(tmp / "api" / "images")
    truth = {s.file: s.group for s in samples}
    assert sorted(len(g) for g in groups) == [8, 8], groups
    assert all(len({truth[Path(p).name] for p in group}) == 1 for group in groups), groups
    batch = imgdedup.hash_files(tmp / "api" / "images", algo="phash", dihedral=False)
    assert batch.hashes.shape == (16, 8) and not batch.errors
    key = imgdedup.GroupKey.generate()
    ingestor = imgdedup.Ingestor(imgdedup.Store(str(tmp / "api-store")), key)
    first = ingestor.submit(str(tmp / "api" / "images" / "chelsea.jpg"))
    copy = ingestor.submit(str(tmp / "api" / "images" / "chelsea-half.png"))
    assert (first.kind, copy.kind, copy.duplicate_of) == ("stored", "duplicate", first.image_id), (first, copy)
    out = tmp / "got.jpg"
    status = cli.main(["get", copy.image_id, "--store", str(tmp / "api-store"), "--key",
                       str(imgdedup.write_key(tmp / "api.key", key)), "--out", str(out)])
    assert status == 0 and out.read_bytes() == (tmp / "api" / "images" / "chelsea.jpg").read_bytes()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        check_installed()
        check_packaged_defaults()
        check_hash_command(Path(tmp))
        check_public_api(Path(tmp))
    print(f"api smoke: imgdedup from {Path(imgdedup.__file__).parent}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
