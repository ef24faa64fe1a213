"""Feature keys in the jobs: a crop whose fingerprint lies beyond the verified zone merges once verified.

The crops here lie 96-128 bits from their originals (beyond ``dedup.verify_up_to``
= 88), so only their shared feature keys make them candidates. Through the bulk
job's CLI (keys of new images and of images a first run stored, read back from
the store's sealed column), ingest, ``get --like`` and ``find_duplicates``.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgdedup.jobs.cli import main as cli_main
from imgdedup.jobs.in_memory import find_duplicates
from imgdedup.jobs.ingest import Ingestor
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import FINGERPRINTS
from tests.jobs.bulk_sets import KEYED_PHOTOS, groups_by_name, keyed_set, write_files

KEY = GroupKey(bytes(range(32)))
SMALL = ["dask.workers=1", "dask.partition_size=2", "dedup.clusters=2"]
CROP_PAIRS = {frozenset({name, f"crop-{name}"}) for name in KEYED_PHOTOS}


@pytest.fixture(scope="module")
def keyed_files(test_data):
    return keyed_set(test_data / "dev")


def bulk(tmp_path, source: str, store: str, *overrides: str) -> int:
    key_file = tmp_path / "group.key"
    if not key_file.exists():
        write_key_file(key_file, KEY)
    settings = [a for s in [*SMALL, *overrides] for a in ("--set", s)]
    return cli_main([*settings, "bulk", source, "--store", store, "--key", str(key_file)])


def test_the_bulk_job_merges_crops_beyond_the_zone_through_their_keys(keyed_files, tmp_path, capsys):
    write_files(str(tmp_path / "src"), keyed_files)
    assert bulk(tmp_path, str(tmp_path / "src"), str(tmp_path / "keys")) == 0
    out = capsys.readouterr().out
    assert "pairs sharing at least 3 feature keys" in out
    groups = groups_by_name(Store(str(tmp_path / "keys")), str(tmp_path / "src"))
    assert CROP_PAIRS <= groups and len(groups) == len(keyed_files) - len(KEYED_PHOTOS)
    rows = Store(str(tmp_path / "keys")).read_table(FINGERPRINTS, columns=["feature_keys"])
    assert rows.column("feature_keys").null_count == 0  # every row keeps its keys, sealed

    assert bulk(tmp_path, str(tmp_path / "src"), str(tmp_path / "plain"), "hash.feature_keypoints=0") == 0
    assert "feature keys" not in capsys.readouterr().out
    plain = groups_by_name(Store(str(tmp_path / "plain")), str(tmp_path / "src"))
    assert not CROP_PAIRS & plain and len(plain) == len(keyed_files)


def test_a_second_run_finds_crops_of_stored_images_and_a_tampered_key_row_is_an_error(keyed_files, tmp_path,
                                                                                      capsys):
    first = {n: d for n, d in keyed_files.items() if not n.startswith("crop-")}
    write_files(str(tmp_path / "first"), first)
    write_files(str(tmp_path / "second"), {n: d for n, d in keyed_files.items() if n.startswith("crop-")})
    for store in ("good", "tampered"):
        assert bulk(tmp_path, str(tmp_path / "first"), str(tmp_path / store)) == 0
    # The store swaps the sealed keys of the two rows of one part: each is bound to its own image id, so
    # neither opens.
    tampered = Store(str(tmp_path / "tampered"))
    parts = [p for p in tampered.fs.find(str(tmp_path / "tampered")) if "/fingerprints/" in p and p.endswith(".parquet")]
    part = next(p for p in parts if any(s.endswith(KEYED_PHOTOS[1]) for s in pq.read_table(p)["source"].to_pylist()))
    table = pq.read_table(part)
    assert table.num_rows == 2
    swapped = pa.array(table.column("feature_keys").to_pylist()[::-1], pa.binary())
    pq.write_table(table.set_column(table.schema.get_field_index("feature_keys"), "feature_keys", swapped), part)
    capsys.readouterr()

    assert bulk(tmp_path, str(tmp_path / "second"), str(tmp_path / "good")) == 0
    assert pointers(tmp_path / "good") == {f"crop-{n}" for n in KEYED_PHOTOS}

    assert bulk(tmp_path, str(tmp_path / "second"), str(tmp_path / "tampered")) == 1  # done, with error rows
    assert "errors 2" in capsys.readouterr().out
    errors = Store(str(tmp_path / "tampered")).read_table("errors").to_pylist()
    assert {(e["stage"], e["error_type"]) for e in errors} == {("decrypt", "IntegrityError")}
    assert all("feature keys failed authentication" in e["message"] for e in errors)
    # The photo whose keys were swapped gets no key candidates; the others' crops still merge.
    assert pointers(tmp_path / "tampered") == {f"crop-{n}" for n in KEYED_PHOTOS if n != KEYED_PHOTOS[1]}


def pointers(store: Path) -> set[str]:
    """File names of the store's pointers."""
    rows = Store(str(store)).read_table(FINGERPRINTS, columns=["source", "duplicate_of"])
    return {source.rsplit("/", 1)[-1] for source, canonical in
            zip(rows.column("source").to_pylist(), rows.column("duplicate_of").to_pylist()) if canonical is not None}


def test_ingest_and_get_like_find_a_crop_beyond_the_zone_through_its_keys(keyed_files, tmp_path, capsys):
    name = KEYED_PHOTOS[0]
    store = Store(str(tmp_path / "s"))
    ingestor = Ingestor(store, KEY, load_config())
    original = ingestor.submit(keyed_files[name], source=name)
    crop = ingestor.submit(keyed_files[f"crop-{name}"], source=f"crop-{name}")
    assert original.kind == "stored"
    assert (crop.kind, crop.duplicate_of) == ("duplicate", original.image_id)
    assert crop.distance > load_config().dedup.verify_up_to  # found by its keys, not by its fingerprint

    # A new process (the keys read back from the store) answers get --like with the original's bytes.
    query = tmp_path / "query.jpg"
    query.write_bytes(keyed_files[f"crop-{KEYED_PHOTOS[1]}"])
    Ingestor(store, KEY, load_config()).submit(keyed_files[KEYED_PHOTOS[1]], source=KEYED_PHOTOS[1])
    key_file = write_key_file(tmp_path / "group.key", KEY)
    out = tmp_path / "found.jpg"
    assert cli_main(["get", "--like", str(query), "--out", str(out), "--store", str(tmp_path / "s"),
                     "--key", str(key_file)]) == 0
    assert out.read_bytes() == keyed_files[KEYED_PHOTOS[1]]
    assert cli_main(["--set", "hash.feature_keypoints=0", "get", "--like", str(query), "--out", str(out),
                     "--store", str(tmp_path / "s"), "--key", str(key_file)]) == 1


def test_find_duplicates_groups_crops_beyond_the_zone(keyed_files, tmp_path):
    write_files(str(tmp_path / "src"), keyed_files)
    groups = find_duplicates(tmp_path / "src")
    assert {frozenset(p.rsplit("/", 1)[-1] for p in g) for g in groups} == CROP_PAIRS
    config = load_config(overrides=["hash.feature_keypoints=0"])
    assert find_duplicates(tmp_path / "src", config=config) == []
