"""What a source holds besides images: links, special files and non-images are reported, names printed escaped."""
from __future__ import annotations

import logging
import re

import pytest

from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli

FORGED = "b\nstored ffffffffffffffffffffffffffffffff class 0 forged.png"
DECISION = re.compile(r"^(stored \w{32} class \d+|duplicate \w{32} of \w{32} distance \d+|error) ")


@pytest.fixture
def mixed(photos, test_data, tmp_path):
    """The photos, a link to a file outside the folder, a dangling link, a FIFO, notes, and a forged name."""
    secret = tmp_path / "outside.jpg"
    secret.write_bytes((test_data / "dev" / "perception_image7.jpg").read_bytes())
    (photos / "link.jpg").symlink_to(secret)
    (photos / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (photos / "notes.txt").write_text("not a picture")
    (photos / FORGED).write_bytes((test_data / "dev" / "perception_image8.jpg").read_bytes())
    return photos


def test_ingest_reports_links_and_skipped_files_and_escapes_names(mixed, key_file, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    url = str(tmp_path / "store")
    assert cli("ingest", mixed, "--store", url, "--key", key_file("k.key")) == 1  # the links are errors
    lines = capsys.readouterr().out.splitlines()
    assert all(DECISION.match(line) for line in lines), lines
    assert len(lines) == 6 + 1 + 2  # photos, the forged name, two links
    assert sum("not followed" in line and line.startswith("error ") for line in lines) == 2
    assert any(line.endswith(r"b\nstored ffffffffffffffffffffffffffffffff class 0 forged.png") for line in lines)
    assert "skipped 1 files that are not images" in caplog.text
    # The link's target was never read: nothing of it in the store.
    assert len(Store(url).read_table(schemas.FINGERPRINTS)) == 7


@pytest.mark.parametrize("named", ["x.svg", "/etc/passwd"])
def test_ingest_of_a_named_file_that_is_not_an_image_is_an_error(named, key_file, tmp_path, capsys):
    if named == "x.svg":
        named = tmp_path / "x.svg"
        named.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert cli("ingest", named, "--store", tmp_path / "store", "--key", key_file("k.key")) == 1
    out = capsys.readouterr().out
    assert out.startswith("error ") and "not a recognised image format" in out


def test_bulk_records_links_as_error_rows_and_counts_non_images(mixed, key_file, tmp_path, capsys, scheduler):
    url = str(tmp_path / "store")
    assert cli("--set", "dask.partition_size=4", "bulk", mixed, "--store", url, "--key", key_file("k.key"),
               "--scheduler", scheduler) == 1
    out = capsys.readouterr().out
    assert "not images 1" in out
    errors = Store(url).read_table(schemas.ERRORS).to_pylist()
    assert sorted(e["source"].rsplit("/", 1)[1] for e in errors) == ["dangling.jpg", "link.jpg"]
    assert all(e["stage"] == "list" and "not followed" in e["message"] for e in errors)
    assert all(line.startswith(("run ", "  ")) for line in out.splitlines())


@pytest.mark.parametrize("command", ["ingest", "bulk"])
def test_the_source_column_holds_what_the_user_gave_not_absolute_paths(command, photos, key_file, tmp_path,
                                                                        monkeypatch, scheduler):
    monkeypatch.chdir(tmp_path)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    extra = ["--scheduler", scheduler] if command == "bulk" else []
    assert cli(command, "photos", "--store", "store", "--key", key_file("k.key"), *extra) == 1
    store = Store(str(tmp_path / "store"))
    sources = store.read_table(schemas.FINGERPRINTS, columns=["source"]).column("source").to_pylist()
    assert sorted(sources) == sorted(f"photos/{p.name}" for p in photos.iterdir() if p.name != "broken.jpg")
    assert [e["source"] for e in store.read_table(schemas.ERRORS).to_pylist()] == ["photos/broken.jpg"]
    # No absolute path of the user's in any table part.
    for key in store.committed_files(schemas.FINGERPRINTS) + store.committed_files(schemas.ERRORS):
        assert str(tmp_path).encode() not in (tmp_path / "store" / key).read_bytes()
