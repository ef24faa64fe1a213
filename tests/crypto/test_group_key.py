"""Group key files and sub-keys."""
from __future__ import annotations

import base64
import json
import os
import pickle
import stat

import pytest

from imgdedup.pipeline.crypto.group_key import (KEY_FILE_ENV, PURPOSES, GroupKey, load_key_file,
                                  resolve_key_path, write_key_file)
from imgdedup.pipeline.errors import KeyFileError


@pytest.fixture
def key_path(tmp_path):
    return write_key_file(tmp_path / "group.key", GroupKey.generate())


def test_round_trip_and_format(tmp_path):
    key = GroupKey.generate()
    path = write_key_file(tmp_path / "group.key", key)
    assert load_key_file(path) == key
    document = json.loads(path.read_text())
    assert document["format"] == "imgdedup-group-key"
    assert document["version"] == 1
    assert document["key_id"] == key.key_id_hex
    raw = base64.b64decode(document["key"])
    assert len(raw) == 32
    assert raw.hex() != document["key_id"] and raw[:16] != key.key_id


def test_file_is_created_0600_even_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = write_key_file(tmp_path / "group.key", GroupKey.generate())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("umask", [0o277, 0o777])
def test_file_is_0600_and_loads_under_a_strict_umask(tmp_path, umask):
    key = GroupKey.generate()
    old = os.umask(umask)
    try:
        path = write_key_file(tmp_path / "group.key", key)
        replaced = write_key_file(path, key, overwrite=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(replaced.stat().st_mode) == 0o600
    assert load_key_file(path) == key


def test_refuses_to_overwrite_unless_asked(key_path):
    before = key_path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_key_file(key_path, GroupKey.generate())
    assert key_path.read_bytes() == before
    replacement = GroupKey.generate()
    write_key_file(key_path, replacement, overwrite=True)
    assert load_key_file(key_path) == replacement
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]


def test_a_replacement_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    occupied = tmp_path / "group.key"
    occupied.mkdir()
    with pytest.raises(KeyFileError, match="cannot write") as info:
        write_key_file(occupied, GroupKey.generate(), overwrite=True)
    assert info.value.subject == str(occupied)
    assert [p.name for p in tmp_path.iterdir()] == ["group.key"]
    with pytest.raises(KeyFileError, match="cannot create"):
        write_key_file(tmp_path / "missing" / "group.key", GroupKey.generate())


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o620])
def test_refuses_a_file_others_can_read(key_path, mode):
    key_path.chmod(mode)
    with pytest.raises(KeyFileError, match="group or others") as info:
        load_key_file(key_path)
    assert info.value.subject == str(key_path)
    assert "chmod 600" in info.value.reason


def test_permissions_checked_are_those_of_the_file_read(key_path, tmp_path):
    # A link is followed: what counts is the mode of the key file it leads to.
    link = tmp_path / "link.key"
    link.symlink_to(key_path)
    load_key_file(link)
    key_path.chmod(0o644)
    with pytest.raises(KeyFileError, match="group or others"):
        load_key_file(link)


def _rewrite(path, **changes):
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))
    path.chmod(0o600)


@pytest.mark.parametrize("changes, message", [
    ({"format": "something-else"}, "not an imgdedup key file"),
    ({"version": 2}, "version 2 is not supported"),
    ({"key": base64.b64encode(b"x" * 16).decode()}, "the key is 16 bytes"),
    ({"key": "not base64!"}, "not valid base64"),
    ({"key": "ключ"}, "not valid base64"),
    ({"key": 12345}, "not valid base64"),
    ({"key_id": "00" * 16}, "key id does not match"),
])
def test_malformed_files_say_what_is_wrong(key_path, changes, message):
    _rewrite(key_path, **changes)
    with pytest.raises(KeyFileError, match=message) as info:
        load_key_file(key_path)
    key_text = str(json.loads(key_path.read_text())["key"])
    assert key_text not in str(info.value)


def test_not_json_and_missing(tmp_path):
    path = tmp_path / "k"
    with pytest.raises(KeyFileError, match="not found"):
        load_key_file(path)
    path.write_text("key = 1")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not JSON"):
        load_key_file(path)


def test_environment_overrides_config(tmp_path):
    assert resolve_key_path("conf.key", {}) == resolve_key_path("conf.key", {KEY_FILE_ENV: ""})
    assert str(resolve_key_path("conf.key", {})) == "conf.key"
    assert resolve_key_path("conf.key", {KEY_FILE_ENV: str(tmp_path / "env.key")}) == tmp_path / "env.key"


def test_repr_and_str_hide_the_key():
    raw = os.urandom(32)
    key = GroupKey(raw)
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert key.key_id_hex in text
        assert raw.hex() not in text and base64.b64encode(raw).decode() not in text
        assert repr(raw) not in text


def test_subkeys_are_distinct_deterministic_and_per_key():
    raw = os.urandom(32)
    key, same, other = GroupKey(raw), GroupKey(raw), GroupKey.generate()
    subkeys = [key.subkey(p) for p in PURPOSES]
    assert len(set(subkeys + [raw, key.key_id])) == len(PURPOSES) + 2
    assert all(len(s) == 32 for s in subkeys)
    assert subkeys == [same.subkey(p) for p in PURPOSES]
    assert not set(subkeys) & {other.subkey(p) for p in PURPOSES}
    with pytest.raises(ValueError, match="unknown key purpose"):
        key.subkey("blob")


def test_pickles_for_workers():
    key = GroupKey.generate()
    copy = pickle.loads(pickle.dumps(key))
    assert copy == key and copy.subkey("blob-wrap") == key.subkey("blob-wrap")
