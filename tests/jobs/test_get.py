"""imgdedup get: by id (pointers resolve to the canonical blob), by a similar image (in the verified zone too),
misses, tampering."""
from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from PIL import Image, ImageOps

from imgdedup.jobs.cli import main
from imgdedup.jobs.ingest import Ingestor
from imgdedup.jobs.lookup import DecidedImages, fingerprint_images, nearest_up_to_zone, queries
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
from tests.jobs.bulk_sets import ZONE_OTHERS, zone_set
from tests.jobs.ingest_images import noise_png


@pytest.fixture(scope="module")
def photos(test_data):
    return sorted((test_data / "dev").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, photos):
    """A store holding four photos and a half-size re-encoded copy of the first."""
    root = tmp_path_factory.mktemp("get")
    key = GroupKey.generate()
    key_file = write_key_file(root / "group.key", key)
    store = Store(str(root / "store"))
    ingestor = Ingestor(store, key, load_config())
    originals = ingestor.submit_batch([str(p) for p in photos])
    image = Image.open(photos[0]).convert("RGB")
    half = io.BytesIO()
    image.resize((image.width // 2, image.height // 2)).save(half, "JPEG", quality=60)
    copy = ingestor.submit(half.getvalue(), source="half.jpg")
    assert [d.kind for d in originals] == ["stored"] * 4 and copy.kind == "duplicate"
    return root, key, key_file, originals, copy


def get(root, key_file, *args):
    return main(["get", *args, "--store", str(root / "store"), "--key", str(key_file)])


def test_get_of_a_duplicate_returns_the_canonical_images_exact_bytes(ingested, photos, tmp_path):
    root, _, key_file, originals, copy = ingested
    assert copy.duplicate_of == originals[0].image_id
    assert get(root, key_file, copy.image_id, "--out", str(tmp_path / "out.jpg")) == 0
    assert (tmp_path / "out.jpg").read_bytes() == photos[0].read_bytes()
    assert get(root, key_file, originals[2].image_id, "--out", str(tmp_path / "two.jpg")) == 0
    assert (tmp_path / "two.jpg").read_bytes() == photos[2].read_bytes()


def test_get_like_finds_the_original_of_a_rotated_reencoded_copy(ingested, photos, tmp_path, capsys):
    root, _, key_file, originals, _ = ingested
    query = tmp_path / "query.jpg"
    ImageOps.mirror(Image.open(photos[1]).convert("RGB").transpose(Image.Transpose.ROTATE_270)).save(query, quality=50)
    assert get(root, key_file, "--like", str(query), "--out", str(tmp_path / "found.jpg")) == 0
    assert (tmp_path / "found.jpg").read_bytes() == photos[1].read_bytes()
    assert originals[1].image_id in capsys.readouterr().out


@pytest.mark.parametrize("target", ["0" * 32, "--like"])
def test_a_miss_prints_the_message_and_exits_1(ingested, tmp_path, capsys, target):
    root, _, key_file, _, _ = ingested
    if target == "--like":
        (tmp_path / "noise.png").write_bytes(noise_png(7))
        args = ["--like", str(tmp_path / "noise.png")]
    else:
        args = [target]
    assert get(root, key_file, *args, "--out", str(tmp_path / "out.jpg")) == 1
    assert capsys.readouterr().out.strip() == "The image does not exist"
    assert not (tmp_path / "out.jpg").exists()


def test_a_tampered_blob_writes_nothing(ingested, tmp_path, capsys):
    root, _, key_file, originals, _ = ingested
    body = root / "store" / blob_body_key(originals[3].image_id)
    saved = body.read_bytes()
    body.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    try:
        assert get(root, key_file, originals[3].image_id, "--out", str(tmp_path / "bad.jpg")) == 3  # integrity error
    finally:
        body.write_bytes(saved)
    assert list(tmp_path.iterdir()) == []
    assert "failed authentication" in capsys.readouterr().err


# -- the verified zone: a match above t counts once local features agree -------

#: Overrides that open the zone up to 128 bits at t = 64, so the nearest different photo lies in it.
WIDE_ZONE = ("dedup.verify_up_to=128", "dedup.max_false_merge_rate=0", "dedup.max_verifications_per_image=1e9")


@pytest.fixture(scope="module")
def zone_store(tmp_path_factory, test_data):
    """A store holding the zone set's photo and its other photos; the photo's 20 % crop in a file beside it."""
    root = tmp_path_factory.mktemp("zone")
    key = GroupKey.generate()
    key_file = write_key_file(root / "group.key", key)
    files = zone_set(test_data / "dev")
    names = ["photo.jpg", *ZONE_OTHERS]
    decisions = Ingestor(Store(str(root / "store")), key, load_config()).submit_batch(
        [files[name] for name in names], sources=names)
    assert [d.kind for d in decisions] == ["stored"] * len(names)
    (root / "crop.jpg").write_bytes(files["photo-crop20.jpg"])
    return root, key, key_file, decisions[0], files["photo.jpg"]


def get_with(root, key_file, overrides, *args):
    """:func:`get` with ``--set`` overrides of the config."""
    return main([*(f"--set={o}" for o in overrides), "get", *args, "--store", str(root / "store"),
                 "--key", str(key_file)])


def test_get_like_returns_the_original_of_a_crop_in_the_verified_zone(zone_store, tmp_path, capsys):
    root, _, key_file, photo, photo_bytes = zone_store
    assert get(root, key_file, "--like", str(root / "crop.jpg"), "--out", str(tmp_path / "found.jpg")) == 0
    assert (tmp_path / "found.jpg").read_bytes() == photo_bytes
    out = capsys.readouterr().out
    assert out.startswith(photo.image_id)
    distance = int(re.search(r"\(distance (\d+) bits\)", out).group(1))
    dedup = load_config().dedup
    t = dedup.threshold_for(len(ZONE_OTHERS) + 2)
    assert t < distance <= dedup.verify_threshold_for(len(ZONE_OTHERS) + 2, t)  # in the zone, not within t


def test_get_like_with_the_zone_off_misses_the_crop(zone_store, tmp_path, capsys):
    root, _, key_file, _, _ = zone_store
    assert get_with(root, key_file, ["dedup.verify_up_to=0"], "--like", str(root / "crop.jpg"),
                    "--out", str(tmp_path / "found.jpg")) == 1
    assert capsys.readouterr().out.strip() == "The image does not exist"
    assert not (tmp_path / "found.jpg").exists()


def test_get_like_misses_a_different_photo_that_lies_in_the_zone(zone_store, test_data, tmp_path, capsys):
    root, key, key_file, _, _ = zone_store
    query = test_data / "dev" / "perception_image2.jpg"
    config = load_config(overrides=list(WIDE_ZONE))
    images = DecidedImages.load(Store(str(root / "store")), key, config)
    batch = fingerprint_images([query.read_bytes()], [query.name], config)
    [(_, distance)], t = nearest_up_to_zone(images.index, queries(key, config.crypto.mode, batch), config)
    assert distance > t  # its nearest stored photo is a zone match, which only the verifier turns down

    assert get_with(root, key_file, WIDE_ZONE, "--like", str(query), "--out", str(tmp_path / "found.jpg")) == 1
    assert capsys.readouterr().out.strip() == "The image does not exist"
    assert not (tmp_path / "found.jpg").exists()


def test_a_tampered_canonical_met_in_the_zone_is_one_line_and_status_3(zone_store, tmp_path):
    root, _, key_file, photo, _ = zone_store
    body = root / "store" / blob_body_key(photo.image_id)
    saved = body.read_bytes()
    body.write_bytes(saved[:len(saved) // 2] + bytes([saved[len(saved) // 2] ^ 1]) + saved[len(saved) // 2 + 1:])
    try:  # the command as a user runs it: whatever reaches stderr, logs and tracebacks included
        result = subprocess.run([sys.executable, "-m", "imgdedup.jobs.cli", "get", "--like", str(root / "crop.jpg"),
                                 "--out", str(tmp_path / "found.jpg"), "--store", str(root / "store"),
                                 "--key", str(key_file)], capture_output=True, text=True, timeout=300)
    finally:
        body.write_bytes(saved)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"imgdedup: error: {photo.image_id}: verify: ") and "failed authentication" in line
    assert list(tmp_path.iterdir()) == []
