"""Crash safety of ingest: SIGKILL at random moments, restart, and every image has exactly one decision.

Each trial starts ``imgdedup ingest`` on a fresh store with two images per
micro-batch, kills it with SIGKILL after a random delay (anywhere from start-up
to the last commit), runs it again to the end, and checks the store: one
fingerprints row per upload (a byte-identical copy under another name is one
too, a pointer to the first), one error row for the bad file, every
committed blob decrypts to the bytes of its source, every pointer names a
stored image. Twenty trials, as the crash-safety requirement asks (about
forty seconds on two cores); ``IMGDEDUP_KILL_TRIALS=N`` runs another number.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from imgdedup.jobs.cli import main
from imgdedup.pipeline.crypto.blob import open_bytes
from imgdedup.pipeline.crypto.group_key import GroupKey, load_key_file, write_key_file
from imgdedup.pipeline.store import Store, schemas
from tests.jobs.ingest_images import ingest_finished, noise_png, rows_per_digest

TRIALS = int(os.environ.get("IMGDEDUP_KILL_TRIALS", "20"))


@pytest.fixture(scope="module")
def images(tmp_path_factory, test_data) -> Path:
    """Nine distinct pictures, a turned copy of one of them, a byte-for-byte copy of another, and a non-image."""
    folder = tmp_path_factory.mktemp("incoming")
    for seed in range(6):
        (folder / f"noise{seed}.png").write_bytes(noise_png(seed))
    for photo in sorted((test_data / "dev").glob("*.jpg"))[:3]:
        small = Image.open(photo).convert("RGB")
        small.thumbnail((480, 480))
        small.save(folder / photo.name, quality=90)
    Image.open(folder / photo.name).transpose(Image.Transpose.ROTATE_90).save(folder / "turned.png")
    (folder / "same-as-noise0.png").write_bytes(noise_png(0))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


@pytest.fixture(scope="module")
def key_file(tmp_path_factory):
    return write_key_file(tmp_path_factory.mktemp("key") / "group.key", GroupKey.generate())


def ingest_args(images: Path, store: Path, key_file: Path) -> list[str]:
    return ["--set", "ingest.batch_size=2", "ingest", str(images), "--store", str(store), "--key", str(key_file)]


def full_run_seconds(images: Path, tmp_path: Path, key_file: Path) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "imgdedup.jobs.cli", *ingest_args(images, tmp_path / "timing", key_file)],
                          capture_output=True)
    assert ingest_finished(done.returncode, done.stderr, 1), done.stderr.decode()[-2000:]  # 1: the bad file
    return time.monotonic() - started


def check_store(store: Store, images: Path, key: GroupKey) -> None:
    rows = store.read_table(schemas.FINGERPRINTS).to_pylist()
    sources = sorted(Path(r["source"].removeprefix("file://")).name for r in rows)
    assert sources == sorted({p.name for p in images.iterdir()} - {"broken.jpg"})  # each upload once
    assert sorted(rows_per_digest(store).values()) == [1] * (len(rows) - 2) + [2]
    by_name = {Path(r["source"]).name: r for r in rows}
    copy, first = by_name["same-as-noise0.png"], by_name["noise0.png"]
    assert (copy["duplicate_of"], copy["distance"], copy["blob"]) == (first["image_id"], 0, None)
    errors = store.read_table(schemas.ERRORS).to_pylist()
    assert [Path(e["source"].removeprefix("file://")).name for e in errors] == ["broken.jpg"]
    stored = {r["image_id"]: r for r in rows if r["blob"] is not None}
    assert set(store.iter_blob_ids()) == set(stored)
    for image_id, row in stored.items():
        with store.open_blob_body(image_id) as body:
            plain = open_bytes(key, image_id, store.read_blob_header(image_id), body.read())
        assert plain == (images / Path(row["source"]).name).read_bytes()
    assert all(r["duplicate_of"] in stored for r in rows if r["blob"] is None)
    assert any(r["blob"] is None for r in rows)  # the turned copy is a pointer


def test_sigkill_at_random_points_then_restart(images, key_file, tmp_path):
    key = load_key_file(key_file)
    longest = full_run_seconds(images, tmp_path, key_file)
    rng = random.Random(6)
    for trial in range(TRIALS):
        store_path = tmp_path / f"store{trial}"
        process = subprocess.Popen([sys.executable, "-m", "imgdedup.jobs.cli", *ingest_args(images, store_path, key_file)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, longest))
        process.send_signal(signal.SIGKILL)
        process.wait()
        # The restart reports the bad file as an error, hence status 1.
        assert main(ingest_args(images, store_path, key_file)) == 1
        check_store(Store(str(store_path)), images, key)
        version = Store(str(store_path)).latest_version()
        assert main(ingest_args(images, store_path, key_file)) == 1
        assert Store(str(store_path)).latest_version() == version
