"""Authenticated resolution: ``get`` follows an id to a blob only through rows whose MAC holds.

An attacker with write access to the store edits a fingerprints part: a
pointer redirected to another stored image, a mapping with a MAC moved from
another row, a canonical turned into a pointer, MACs stripped. Each is an
IntegrityError (exit status 3) before any byte is written.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli, half_size_copy


@pytest.fixture
def merged(photos, key_file, tmp_path):
    """A local store with the six photos and a half-size copy of the first, which became a pointer."""
    key = key_file("group.key")
    url = str(tmp_path / "store")
    assert cli("ingest", photos, "--store", url, "--key", key) == 0
    copy = half_size_copy(photos / "perception_image1.jpg", tmp_path / "copy.jpg")
    assert cli("ingest", copy, "--store", url, "--key", key) == 0
    store = Store(url)
    rows = store.read_table(schemas.FINGERPRINTS).to_pylist()
    pointer = next(r for r in rows if r["duplicate_of"] is not None)
    return url, key, rows, pointer


def _edit_row(url: str, image_id: str, **values) -> None:
    """Rewrite, in place, the committed part holding ``image_id`` with some of its row's cells changed."""
    store = Store(url)
    for key in store.committed_files(schemas.FINGERPRINTS):
        path = Path(url) / key
        table = pq.read_table(path)
        is_row = pc.equal(table.column("image_id"), image_id)
        if not pc.any(is_row).as_py():
            continue
        for name, value in values.items():
            index = table.schema.get_field_index(name)
            column = pc.if_else(is_row, pa.scalar(value, table.schema.field(name).type), table.column(name))
            table = table.set_column(index, table.schema.field(name), column)
        pq.write_table(table, path)
        return
    raise AssertionError(f"{image_id} is in no committed part")


def _get(url, key, image_id, out, *extra) -> int:
    return cli("get", image_id, "--out", out, "--store", url, "--key", key, *extra)


def test_a_redirected_pointer_is_an_integrity_error_and_writes_nothing(merged, tmp_path, capsys):
    url, key, rows, pointer = merged
    out = tmp_path / "got.jpg"
    assert _get(url, key, pointer["image_id"], out) == 0
    other = next(r["image_id"] for r in rows if r["duplicate_of"] is None and r["image_id"] != pointer["duplicate_of"])
    _edit_row(url, pointer["image_id"], duplicate_of=other)
    out.unlink()
    capsys.readouterr()
    assert _get(url, key, pointer["image_id"], out) == 3
    err = capsys.readouterr().err
    assert "fails its MAC" in err and pointer["image_id"] in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.glob(".got.jpg*")) == []


def test_a_mapping_moved_with_its_mac_from_another_row_is_refused(merged, tmp_path):
    url, key, rows, pointer = merged
    # A canonical's own (valid) row, MAC and all, pasted onto the pointer: the MAC names the other image.
    donor = next(r for r in rows if r["duplicate_of"] is None and r["image_id"] != pointer["duplicate_of"])
    _edit_row(url, pointer["image_id"], duplicate_of=None, blob=donor["blob"], resolution_mac=donor["resolution_mac"])
    assert _get(url, key, pointer["image_id"], tmp_path / "got.jpg") == 3


def test_a_canonical_turned_into_a_pointer_is_refused(merged, tmp_path):
    url, key, rows, pointer = merged
    canonical = pointer["duplicate_of"]
    other = next(r["image_id"] for r in rows if r["duplicate_of"] is None and r["image_id"] != canonical)
    _edit_row(url, canonical, duplicate_of=other, blob=None)
    assert _get(url, key, canonical, tmp_path / "a.jpg") == 3
    # The pointer's own row is intact, but the canonical it names fails.
    assert _get(url, key, pointer["image_id"], tmp_path / "b.jpg") == 3


def test_rows_without_a_mac_are_refused_unless_allowed(merged, tmp_path, capsys):
    url, key, rows, pointer = merged
    _edit_row(url, pointer["image_id"], resolution_mac=None)
    out = tmp_path / "got.jpg"
    capsys.readouterr()
    assert _get(url, key, pointer["image_id"], out) == 3
    assert "--allow-unauthenticated" in capsys.readouterr().err
    assert _get(url, key, pointer["image_id"], out, "--allow-unauthenticated") == 0
    # A forged MAC is not a missing one: the option does not let it through.
    _edit_row(url, pointer["image_id"], resolution_mac=bytes(32))
    assert _get(url, key, pointer["image_id"], out, "--allow-unauthenticated") == 3


def test_get_like_checks_the_mapping_of_what_it_found(merged, photos, tmp_path):
    url, key, rows, pointer = merged
    canonical = pointer["duplicate_of"]
    other = next(r["image_id"] for r in rows if r["duplicate_of"] is None and r["image_id"] != canonical)
    _edit_row(url, canonical, duplicate_of=other, blob=None)
    assert cli("get", "--like", photos / "perception_image1.jpg", "--out", tmp_path / "x.jpg",
               "--store", url, "--key", key) == 3


def test_unmerge_of_a_byte_for_byte_copy_says_so(photos, key_file, tmp_path, capsys, scheduler):
    key = key_file("group.key")
    url = str(tmp_path / "store")
    (photos / "same.jpg").write_bytes((photos / "perception_image2.jpg").read_bytes())
    assert cli("bulk", photos, "--store", url, "--key", key, "--scheduler", scheduler) == 0
    rows = Store(url).read_table(schemas.FINGERPRINTS).to_pylist()
    copy = next(r for r in rows if r["duplicate_of"] is not None)
    capsys.readouterr()
    assert cli("unmerge", copy["duplicate_of"], copy["image_id"], "--store", url, "--key", key) == 2
    err = capsys.readouterr().err
    assert "byte-for-byte copy" in err and "grace period" not in err
