"""``get``'s paths: --out must be a regular file (or new) in an existing folder; --like must be a readable image."""
from __future__ import annotations

import os
import stat

import pytest

from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli


@pytest.fixture
def stored(photos, key_file, tmp_path):
    key = key_file("group.key")
    url = str(tmp_path / "store")
    assert cli("ingest", photos, "--store", url, "--key", key) == 0
    image_id = Store(url).read_table(schemas.FINGERPRINTS, columns=["image_id"]).column("image_id")[0].as_py()
    return url, key, image_id


def _get(stored, out, *query) -> int:
    url, key, image_id = stored
    return cli("get", *(query or [image_id]), "--out", out, "--store", url, "--key", key)


def _one_line(capsys, says):
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_out_into_a_missing_folder(stored, tmp_path, capsys):
    assert _get(stored, tmp_path / "no-such-folder" / "x.jpg") == 2
    _one_line(capsys, "does not exist")
    assert not (tmp_path / "no-such-folder").exists()


def test_out_onto_a_folder_is_refused_and_the_folder_kept(stored, tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "kept.txt").write_text("mine")
    assert _get(stored, folder) == 2
    _one_line(capsys, "not a regular file")
    assert (folder / "kept.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_out_onto_special_files_never_replaces_them(stored, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    nodes = [fifo]
    if os.geteuid() == 0:  # a character device like /dev/full, made here so a failure harms nothing
        device = tmp_path / "full"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        nodes.append(device)
    link = tmp_path / "link.jpg"
    link.symlink_to(fifo)
    for node in [*nodes, link]:
        assert _get(stored, node) == 2
        _one_line(capsys, "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and link.is_symlink()
    if len(nodes) == 2:
        assert stat.S_ISCHR(os.stat(nodes[1]).st_mode)


def test_out_onto_a_regular_file_replaces_it_whole(stored, tmp_path, photos):
    out = tmp_path / "old.jpg"
    out.write_bytes(b"old contents")
    assert _get(stored, out) == 0
    assert out.read_bytes() in {p.read_bytes() for p in photos.iterdir()}


def test_like_a_missing_file(stored, tmp_path, capsys):
    assert _get(stored, tmp_path / "x.jpg", "--like", tmp_path / "nope.jpg") == 2
    _one_line(capsys, "--like: no such file")
    assert not (tmp_path / "x.jpg").exists()


def test_like_a_file_that_is_not_an_image_says_why(stored, tmp_path, capsys):
    query = tmp_path / "notes.jpg"
    query.write_text("not a picture")
    assert _get(stored, tmp_path / "x.jpg", "--like", query) == 2
    _one_line(capsys, "decode: not a recognised image format")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes((tmp_path / "photos" / "perception_image4.jpg").read_bytes()[:300])
    assert _get(stored, tmp_path / "x.jpg", "--like", truncated) == 2
    _one_line(capsys, "cut.jpg: decode:")
