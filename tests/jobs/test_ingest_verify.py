"""Ingest's verified zone: an upload whose nearest stored image lies above the direct t is checked on pixels.

The upload's picture is verified against its match's canonical image, read
from the store's blob (decrypted in the ingesting process) or from the same
micro-batch; a blob that fails to decrypt is an error row of stage ``verify``
and the upload is stored, never pointed at pixels nobody checked.
"""
from __future__ import annotations

import pytest

from imgdedup.jobs.ingest import Ingestor
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
from tests.jobs.bulk_sets import ZONE_OTHERS, zone_set

KEY = GroupKey(bytes(range(32)))


@pytest.fixture(scope="module")
def zone_files(test_data):
    return zone_set(test_data / "dev")


def ingest(store: Store, files: dict[str, bytes], names: list[str], *overrides: str, batch: bool = False):
    ingestor = Ingestor(store, KEY, load_config(overrides=list(overrides)))
    if batch:
        return ingestor.submit_batch([files[n] for n in names], sources=names)
    return [ingestor.submit(files[name], source=name) for name in names]


def test_a_crop_in_the_zone_points_to_its_original_once_verified_and_not_without(zone_files, tmp_path):
    stored, crop = ingest(Store(str(tmp_path / "on")), zone_files, ["photo.jpg", "photo-crop20.jpg"])
    config = load_config()
    t = config.dedup.threshold_for(2)
    assert stored.kind == "stored"
    assert (crop.kind, crop.duplicate_of) == ("duplicate", stored.image_id)
    assert t < crop.distance <= config.dedup.verify_threshold_for(2, t)  # it was in the zone, not within t

    _, unverified = ingest(Store(str(tmp_path / "off")), zone_files, ["photo.jpg", "photo-crop20.jpg"],
                           "dedup.verify_up_to=0")
    assert unverified.kind == "stored"


def test_the_canonical_stored_earlier_in_the_same_batch_is_verified_from_memory(zone_files, tmp_path):
    stored, crop = ingest(Store(str(tmp_path / "s")), zone_files, ["photo.jpg", "photo-crop20.jpg"], batch=True)
    assert (crop.kind, crop.duplicate_of) == ("duplicate", stored.image_id)


def test_different_photos_in_a_wide_zone_are_never_pointers(zone_files, tmp_path):
    names = ["photo.jpg", *ZONE_OTHERS]
    wide = ["dedup.verify_up_to=128", "dedup.max_false_merge_rate=0", "dedup.max_verifications_per_image=1e9"]
    decisions = ingest(Store(str(tmp_path / "s")), zone_files, names, *wide)
    assert [d.kind for d in decisions] == ["stored"] * len(names)


def test_a_canonical_blob_that_fails_to_decrypt_is_an_error_row_and_the_upload_is_stored(zone_files, tmp_path):
    store = Store(str(tmp_path / "s"))
    [stored] = ingest(store, zone_files, ["photo.jpg"])
    body = tmp_path / "s" / blob_body_key(stored.image_id)
    data = bytearray(body.read_bytes())
    data[len(data) // 2] ^= 1
    body.write_bytes(bytes(data))

    [crop] = ingest(store, zone_files, ["photo-crop20.jpg"])
    assert crop.kind == "stored"
    rows = store.read_table("errors").to_pylist()
    assert [(r["stage"], r["source"], r["error_type"]) for r in rows] == [("verify", stored.image_id,
                                                                            "IntegrityError")]
