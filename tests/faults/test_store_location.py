"""A mistyped, empty or wrong ``--store``: one line and exit status 2, and gc never deletes outside a store."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.faults.conftest import cli

COMMANDS = [
    ["get", "abcd1234", "--out", "{tmp}/x.jpg", "--key", "{key}"],
    ["ingest", "{photos}", "--key", "{key}"],
    ["bulk", "{photos}", "--key", "{key}"],
    ["gc", "--grace", "0"],
    ["unmerge", "abcd1234", "abcd5678", "--key", "{key}"],
    ["report", "--out", "{tmp}/report"],
]


def _argv(template, tmp_path, photos, key, store):
    """The command line; an empty store is given the way it happens, as an empty ``store.url``."""
    argv = [a.format(tmp=tmp_path, photos=photos, key=key) for a in template]
    return ["--set", "store.url=", *argv] if store == "" else [*argv, "--store", store]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("store, says", [
    ("fiel://x", "Protocol not known: fiel"),
    ("{file}", "is a file, not a store folder"),
    ("", "the store URL is empty"),
])
def test_a_wrong_store_is_one_line_and_status_2(command, store, says, tmp_path, photos, key_file, capsys,
                                                 monkeypatch):
    key = key_file("group.key")
    monkeypatch.chdir(tmp_path)
    store = store.format(file=key)
    assert cli(*_argv(command, tmp_path, photos, key, store)) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_an_s3_store_without_credentials_is_one_line_and_status_2(command, tmp_path, photos, key_file):
    # A process of its own: no AWS credentials anywhere, and nothing another test mocked or cached.
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    key = key_file("group.key")
    argv = _argv(command, tmp_path, photos, key, f"s3://imgdedup-{uuid.uuid4().hex}/store")
    done = subprocess.run([sys.executable, "-m", "imgdedup.jobs.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "NoCredentialsError" in lines[0], done.stderr


def test_gc_refuses_a_folder_that_is_not_a_store_and_deletes_nothing(tmp_path, capsys, monkeypatch):
    # Files shaped like a store's own (a table part, a blob, a temporary), old enough to collect.
    folder = tmp_path / "not-a-store"
    names = [f"fingerprints/run-1/part-0-{uuid.uuid4().hex}.parquet", "blobs/ab/cd/abcd1234",
             f"notes/run-1/{uuid.uuid4().hex}-todo.txt", f"blobs/ab/cd/abcd1234.tmp-{uuid.uuid4().hex}"]
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
        os.utime(path, (time.time() - 10**6,) * 2)
    for store in (str(folder), None):
        monkeypatch.chdir(folder)
        argv = ["gc", "--grace", "0"] + (["--store", store] if store else [])
        assert cli(*(["--set", "store.url=."] if store is None else []), *argv) == 2
        assert "not a store" in capsys.readouterr().err
    assert all((folder / name).read_text() == "mine" for name in names)
