"""Shared pieces of the fault and misuse suite: real photos, key files, the CLI as a user runs it."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from PIL import Image

from imgdedup.jobs.cli import main
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file

PHOTOS = [f"perception_image{i}.jpg" for i in (1, 2, 3, 4, 5, 6)]


@pytest.fixture
def photos(test_data, tmp_path) -> Path:
    """A folder of six development photos, as a user's source folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        (folder / name).write_bytes((test_data / "dev" / name).read_bytes())
    return folder


def half_size_copy(path: Path, out: Path) -> Path:
    """A half-size JPEG re-encoding of ``path`` (an edited copy within t of it)."""
    image = Image.open(path)
    buffer = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(buffer, "JPEG", quality=80)
    out.write_bytes(buffer.getvalue())
    return out


@pytest.fixture
def key_file(tmp_path):
    """Make a fresh group key file under ``tmp_path`` with the given name."""
    def make(name: str) -> Path:
        return write_key_file(tmp_path / name, GroupKey.generate())
    return make


@pytest.fixture(scope="module")
def scheduler():
    """Address of an in-process Dask cluster for ``bulk --scheduler`` (memory and local stores alike)."""
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster):
        yield cluster.scheduler_address


def cli(*argv) -> int:
    """``imgdedup ARGV...`` in this process, as the console script runs it."""
    return main([str(a) for a in argv])
