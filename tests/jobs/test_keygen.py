"""``imgdedup keygen`` and ``imgdedup rotate-key`` on real stores."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import stat
import uuid

import pytest

from imgdedup.jobs.cli import main
from imgdedup.pipeline.crypto.blob import open_stream, parse_header, seal_stream
from imgdedup.pipeline.crypto.group_key import PURPOSES, GroupKey, load_key_file, write_key_file
from imgdedup.pipeline.errors import IntegrityError
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
from tests.store.conftest import header_rewrites_killed_after

SEGMENT = 64
BLOB_IDS = [f"img{i:04d}" for i in range(6)]


def test_keygen_writes_a_private_key_file(tmp_path, capsys):
    path = tmp_path / "group.key"
    assert main(["keygen", "--out", str(path)]) == 0
    key = load_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = capsys.readouterr().out
    assert key.key_id_hex in out and str(path) in out
    assert path.read_text().split('"key": "')[1][:20] not in out

    assert main(["keygen", "--out", str(path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert load_key_file(path) == key
    assert main(["keygen", "--out", str(path), "--force"]) == 0
    assert load_key_file(path) != key


def test_keygen_defaults_to_the_environment_path(tmp_path, monkeypatch):
    path = tmp_path / "from-env.key"
    monkeypatch.setenv("IMGDEDUP_KEY_FILE", str(path))
    assert main(["keygen"]) == 0
    load_key_file(path)


@pytest.fixture(params=["local", "memory"])
def store_url(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    url = f"memory://rotate-{uuid.uuid4().hex}"
    yield url
    store = Store(url)
    store.fs.rm(store.root, recursive=True)


@pytest.fixture
def key_files(tmp_path):
    old, new = GroupKey.generate(), GroupKey.generate()
    return (old, write_key_file(tmp_path / "old.key", old),
            new, write_key_file(tmp_path / "new.key", new))


def _fill_store(url: str, key: GroupKey) -> dict[str, bytes]:
    """Seal and commit a few blobs of different sizes; returns their plaintexts."""
    store = Store(url)
    plaintexts = {}
    for size, blob_id in enumerate(BLOB_IDS):
        plaintexts[blob_id] = os.urandom(size * 50)
        header, body = seal_stream(key, blob_id, io.BytesIO(plaintexts[blob_id]), SEGMENT)
        store.write_blob(blob_id, header, body)
    store.commit("fill", files={}, blobs=BLOB_IDS)
    return plaintexts


def _read(store: Store, keys, blob_id: str) -> bytes:
    with store.open_blob_body(blob_id) as body:
        return b"".join(open_stream(keys, blob_id, store.read_blob_header(blob_id), body))


def _bodies(store: Store) -> dict[str, tuple[bytes, dict]]:
    """Each body object's bytes and filesystem info (mtime, inode, ...)."""
    out = {}
    for blob_id in BLOB_IDS:
        path = f"{store.root}/{blob_body_key(blob_id)}"
        out[blob_id] = (store.fs.cat_file(path), store.fs.info(path))
    return out


def _rotate(url, old_path, new_path):
    return main(["rotate-key", "--store", url, "--old", str(old_path), "--new", str(new_path),
                 "--progress-every", "2"])


def test_rotation_rewraps_headers_only(store_url, key_files, capsys, caplog):
    old, old_path, new, new_path = key_files
    plaintexts = _fill_store(store_url, old)
    store = Store(store_url)
    bodies_before = _bodies(store)

    caplog.set_level(logging.DEBUG)
    assert _rotate(store_url, old_path, new_path) == 0
    out = capsys.readouterr().out
    assert f"{len(BLOB_IDS)} re-wrapped" in out
    progress = [r.getMessage() for r in caplog.records if "blobs visited" in r.getMessage()]
    assert len(progress) == len(BLOB_IDS) // 2
    for path in (old_path, new_path):
        secret = json.loads(path.read_text())["key"]
        assert secret not in out and secret not in caplog.text
    # No group key or sub-key, in any spelling, in any object of the store.
    secrets = [json.loads(p.read_text())["key"] for p in (old_path, new_path)]
    secrets += [base64.b64decode(k) for k in secrets]
    secrets += [k.subkey(purpose) for k in (old, new) for purpose in PURPOSES]
    secrets += [s.hex() for s in secrets if isinstance(s, bytes)]
    contents = [store.fs.cat_file(f) for f in store.fs.find(store.root)]
    assert len(contents) > 2 * len(BLOB_IDS)
    for secret in secrets:
        needle = secret.encode() if isinstance(secret, str) else secret
        assert not any(needle in content for content in contents)

    assert _bodies(store) == bodies_before
    for blob_id, plaintext in plaintexts.items():
        assert parse_header(store.read_blob_header(blob_id), blob_id).wrap_key_id == new.key_id
        assert _read(store, new, blob_id) == plaintext
        with pytest.raises(IntegrityError):
            _read(store, old, blob_id)


def test_interrupted_rotation_resumes(store_url, key_files, monkeypatch, capsys):
    old, old_path, new, new_path = key_files
    plaintexts = _fill_store(store_url, old)
    with header_rewrites_killed_after(monkeypatch, 2), pytest.raises(SystemExit):
        _rotate(store_url, old_path, new_path)

    # Mid-rotation every blob reads with whichever key wraps it now.
    store = Store(store_url)
    wrapped_by = [parse_header(store.read_blob_header(b), b).wrap_key_id for b in BLOB_IDS]
    assert wrapped_by.count(new.key_id) == 2 and wrapped_by.count(old.key_id) == len(BLOB_IDS) - 2
    for blob_id, plaintext in plaintexts.items():
        assert _read(store, [old, new], blob_id) == plaintext

    capsys.readouterr()
    assert _rotate(store_url, old_path, new_path) == 0
    out = capsys.readouterr().out
    assert f"{len(BLOB_IDS) - 2} re-wrapped, 2 already under key {new.key_id_hex}" in out
    for blob_id, plaintext in plaintexts.items():
        assert _read(store, new, blob_id) == plaintext
    assert _rotate(store_url, old_path, new_path) == 0
    assert f"0 re-wrapped, {len(BLOB_IDS)} already" in capsys.readouterr().out


def test_blob_under_an_unknown_key_is_reported(tmp_path, key_files, capsys):
    old, old_path, new, new_path = key_files
    url = str(tmp_path / "store")
    _fill_store(url, old)
    stranger = GroupKey.generate()
    header, body = seal_stream(stranger, "zz-stranger", io.BytesIO(b"x"), SEGMENT)
    Store(url).write_blob("zz-stranger", header, body)

    assert _rotate(url, old_path, new_path) == 1
    assert f"{len(BLOB_IDS)} re-wrapped" in capsys.readouterr().out
    stranger_header = Store(url).read_blob_header("zz-stranger")
    assert parse_header(stranger_header, "zz-stranger").wrap_key_id == stranger.key_id


def test_a_damaged_header_naming_the_new_key_is_not_counted_as_done(tmp_path, key_files, capsys):
    old, old_path, new, new_path = key_files
    url = str(tmp_path / "store")
    _fill_store(url, old)
    assert _rotate(url, old_path, new_path) == 0
    store = Store(url)
    damaged = bytearray(store.read_blob_header(BLOB_IDS[1]))
    damaged[-1] ^= 0x01  # the header MAC: still names the new key, no longer verifies
    store.replace_blob_header(BLOB_IDS[1], bytes(damaged))
    capsys.readouterr()

    assert _rotate(url, old_path, new_path) == 1
    assert (f"0 re-wrapped, {len(BLOB_IDS) - 1} already under key {new.key_id_hex}, 1 failed"
            in capsys.readouterr().out)


def test_new_key_given_as_old_is_refused(tmp_path, key_files):
    old, old_path, new, new_path = key_files
    assert _rotate(str(tmp_path / "store"), new_path, new_path) == 2
