"""Key rotation as an operator runs it: after ``rotate-key`` every command works with the new key alone.

The store's index keys (tokens, sealed hashes, content digests, image ids) are
wrapped under each current group key in ``_keys/``; rotation re-wraps them with
the blobs, and retires the old key once every blob is under the new one.
"""
from __future__ import annotations

import json
import re

import pytest

from imgdedup.pipeline.crypto.blob import parse_header
from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli, half_size_copy
from tests.store.conftest import header_rewrites_killed_after, new_location, s3_options  # noqa: F401  (S3 fixture)

MODES = ["tokens", "sealed"]


def _ids(store: Store) -> list[str]:
    return store.read_table(schemas.FINGERPRINTS, columns=["image_id"]).column("image_id").to_pylist()


@pytest.fixture
def s3_env(monkeypatch, s3_options):  # noqa: F811
    """Point the CLI's S3 client at the loopback server, as an operator would with AWS_* variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_options["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_options["client_kwargs"]["endpoint_url"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_every_command_works_with_the_new_key_alone_and_the_old_one_is_refused(
        photos, key_file, tmp_path, capsys, scheduler):
    old, new = key_file("old.key"), key_file("new.key")
    url = str(tmp_path / "store")
    assert cli("ingest", photos, "--store", url, "--key", old) == 0
    store = Store(url)
    ids = _ids(store)
    first = photos / "perception_image1.jpg"
    assert cli("rotate-key", "--store", url, "--old", old, "--new", new) == 0
    assert "the old keys are retired" in capsys.readouterr().out

    # get by id and by a similar image, with the new key.
    out = tmp_path / "got.jpg"
    assert cli("get", ids[0], "--out", out, "--store", url, "--key", new) == 0
    assert out.read_bytes() in {p.read_bytes() for p in photos.iterdir()}
    assert cli("get", "--like", first, "--out", out, "--store", url, "--key", new) == 0
    assert out.read_bytes() == first.read_bytes()
    # ingest: an edited copy is found under the old digests and tokens; a repeat is known.
    edits = tmp_path / "edits"
    edits.mkdir()
    half_size_copy(first, edits / "half.jpg")
    capsys.readouterr()
    assert cli("ingest", edits, first, "--store", url, "--key", new) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^duplicate \w+ of \w+ distance \d+ .*half\.jpg$", printed, re.M), printed
    assert len(_ids(store)) == len(ids) + 1
    # bulk on a folder with the photos again and one more copy: all duplicates.
    half_size_copy(photos / "perception_image2.jpg", photos / "half2.jpg")
    assert cli("--set", "dask.partition_size=4", "bulk", photos, "--store", url, "--key", new,
               "--scheduler", scheduler) == 0
    rows = store.read_table(schemas.FINGERPRINTS).to_pylist()
    assert sum(r["duplicate_of"] is None for r in rows) == len(ids)
    assert cli("report", "--out", tmp_path / "report", "--store", url, "--key", new) == 0

    # The old key is retired: every command refuses it with one line, exit status 2.
    capsys.readouterr()
    for argv in (["get", ids[0], "--out", out], ["ingest", edits], ["report", "--out", tmp_path / "r2"]):
        assert cli(*argv, "--store", url, "--key", old) == 2
        err = capsys.readouterr().err
        assert "retired by rotate-key" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_second_rotation_on_s3_keeps_the_first_keys_tables(photos, key_file, tmp_path, capsys, request,
                                                             s3_env, mode):
    location = new_location("s3", request, tmp_path)
    keys = [key_file(f"k{i}.key") for i in range(3)]
    mode_set = ["--set", f"crypto.mode={mode}"]
    assert cli(*mode_set, "ingest", photos, "--store", location.url, "--key", keys[0]) == 0
    ids = _ids(location.open())
    for old, new in zip(keys, keys[1:]):
        assert cli("rotate-key", "--store", location.url, "--old", old, "--new", new) == 0
    store = location.open()
    assert set(store.key_records()) == {json.loads(keys[2].read_text())["key_id"]}
    out = tmp_path / "got.jpg"
    for image_id in ids:
        assert cli(*mode_set, "get", image_id, "--out", out, "--store", location.url, "--key", keys[2]) == 0
    assert cli(*mode_set, "get", "--like", photos / "perception_image3.jpg", "--out", out,
               "--store", location.url, "--key", keys[2]) == 0
    assert out.read_bytes() == (photos / "perception_image3.jpg").read_bytes()
    for retired in keys[:2]:
        assert cli(*mode_set, "get", ids[0], "--out", out, "--store", location.url, "--key", retired) == 2


def test_an_interrupted_rotation_keeps_both_keys_working_and_resumes(photos, key_file, tmp_path, monkeypatch,
                                                                      capsys):
    old, new = key_file("old.key"), key_file("new.key")
    url = str(tmp_path / "store")
    assert cli("ingest", photos, "--store", url, "--key", old) == 0
    with header_rewrites_killed_after(monkeypatch, 2), pytest.raises(SystemExit):
        cli("rotate-key", "--store", url, "--old", old, "--new", new)

    store = Store(url)
    wrapped = {i: parse_header(store.read_blob_header(i), i).wrap_key_id.hex() for i in store.iter_blob_ids()}
    out = tmp_path / "got.jpg"
    new_id = json.loads(new.read_text())["key_id"]
    for blob_id, wrap in wrapped.items():
        # Mid-rotation each blob opens with the key that wraps it, and the tables with either.
        assert cli("get", blob_id, "--out", out, "--store", url, "--key", new if wrap == new_id else old) == 0
    assert sum(w == new_id for w in wrapped.values()) == 2

    assert cli("rotate-key", "--store", url, "--old", old, "--new", new) == 0
    assert f"{len(wrapped) - 2} re-wrapped, 2 already under key" in capsys.readouterr().out
    for blob_id in wrapped:
        assert cli("get", blob_id, "--out", out, "--store", url, "--key", new) == 0
    assert cli("get", next(iter(wrapped)), "--out", out, "--store", url, "--key", old) == 2


def test_an_edited_key_record_is_an_integrity_error(photos, key_file, tmp_path, capsys):
    old, new = key_file("old.key"), key_file("new.key")
    url = str(tmp_path / "store")
    assert cli("ingest", photos, "--store", url, "--key", old) == 0
    assert cli("rotate-key", "--store", url, "--old", old, "--new", new) == 0
    record = next((tmp_path / "store" / "_keys").iterdir())
    document = json.loads(record.read_text())
    document["ciphertext"] = document["ciphertext"][:-8] + ("A" * 8 if document["ciphertext"][-8:] != "A" * 8
                                                           else "B" * 8)
    record.write_text(json.dumps(document))
    image_id = _ids(Store(url))[0]
    capsys.readouterr()
    assert cli("get", image_id, "--out", tmp_path / "x.jpg", "--store", url, "--key", new) == 3
    assert "failed authentication" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()
