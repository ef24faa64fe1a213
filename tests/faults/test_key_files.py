"""Key files that are not regular files are refused by their type, without blocking."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.faults.conftest import cli


def test_a_fifo_as_key_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "group.key"
    os.mkfifo(fifo, 0o600)
    # A subprocess, so a regression (an open that blocks) fails on the timeout instead of hanging the suite.
    result = subprocess.run([sys.executable, "-m", "imgdedup.jobs.cli", "get", "abcd1234", "--out",
                             str(tmp_path / "x.jpg"), "--store", str(tmp_path / "store"), "--key", str(fifo)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a regular file" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_folder_or_device_as_key_file_is_refused(tmp_path, capsys):
    for path, says in ((tmp_path, "Is a directory"), ("/dev/null", "not a regular file")):
        assert cli("get", "abcd1234", "--out", tmp_path / "x.jpg", "--store", tmp_path / "s", "--key", path) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1
