"""imgdedup get: by id (pointers resolve to the canonical blob), by a similar image, misses, tampering."""
from __future__ import annotations

import io

import pytest
from PIL import Image, ImageOps

from imgdedup.jobs.cli import main
from imgdedup.jobs.ingest import Ingestor
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
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
