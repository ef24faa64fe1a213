"""Read-only places: a read-only store, and no writable folder for Numba's cache (no HOME, read-only install).

Each case runs the CLI in a subprocess inside a private mount namespace where
the folder is bind-mounted read-only, which holds for root too (file modes do
not stop root; a read-only mount does).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import imgdedup.pipeline
from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli, half_size_copy

NO_NAMESPACE = "needs a private mount namespace"


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / / 2>/dev/null || mount --bind / /"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(not _namespaces_work(), reason=f"{NO_NAMESPACE} (unshare -m as root)")


def run_read_only(folders: list[Path], argv: list, env: dict | None = None) -> subprocess.CompletedProcess:
    """``imgdedup ARGV`` in a mount namespace where each of ``folders`` is read-only."""
    mounts = " && ".join(f"mount --bind -o ro {shlex.quote(str(f))} {shlex.quote(str(f))}" for f in folders)
    command = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "imgdedup.jobs.cli", *argv])
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{mounts} && exec {command}"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture
def filled(photos, key_file, tmp_path):
    key = key_file("group.key")
    store = tmp_path / "store"
    assert cli("ingest", photos, "--store", store, "--key", key) == 0
    return store, key


@needs_namespace
def test_writing_commands_refuse_a_read_only_store_in_one_line(filled, key_file, photos, tmp_path):
    store, key = filled
    rows = Store(str(store)).read_table(schemas.FINGERPRINTS).to_pylist()
    new = half_size_copy(photos / "perception_image2.jpg", tmp_path / "new.jpg")
    commands = [
        ["ingest", new, "--store", store, "--key", key],
        ["bulk", photos, "--store", store, "--key", key],
        ["unmerge", rows[0]["image_id"], rows[1]["image_id"], "--store", store, "--key", key],
        ["rotate-key", "--store", store, "--old", key, "--new", key_file("new.key")],
    ]
    for argv in commands:
        result = run_read_only([store], argv)
        assert result.returncode == 2, (argv[0], result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "cannot write to the store (Read-only file system)" in lines[0], result.stderr
    # Reading commands still work on it.
    result = run_read_only([store], ["get", rows[0]["image_id"], "--out", tmp_path / "x.jpg", "--store", store,
                                     "--key", key])
    assert result.returncode == 0, result.stderr


@needs_namespace
@pytest.mark.parametrize("fallback_free", [True, False])
def test_no_writable_home_or_package_folder_still_runs_the_compiled_scans(filled, photos, tmp_path, fallback_free):
    store, key = filled
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temporary.mkdir()
    cache = temporary / f"imgdedup-numba-{os.geteuid()}"
    if not fallback_free:  # someone planted the fallback's name: a link to a folder of theirs
        (tmp_path / "theirs").mkdir()
        cache.symlink_to(tmp_path / "theirs")
    package = Path(imgdedup.pipeline.__file__).resolve().parent
    read_only = [package, home]
    env = {"HOME": str(home), "TMPDIR": str(temporary), "XDG_CACHE_HOME": "", "NUMBA_CACHE_DIR": ""}
    result = run_read_only(read_only, ["get", "--like", photos / "perception_image3.jpg", "--out",
                                       tmp_path / "x.jpg", "--store", store, "--key", key], env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.jpg").read_bytes() == (photos / "perception_image3.jpg").read_bytes()
    if fallback_free:
        assert any(cache.rglob("*.nbi")), "compiled scans not cached in the fallback folder"
        assert "RuntimeWarning" not in result.stderr
    else:  # never loads code from a folder it does not own: runs uncached, and says so
        assert not any((tmp_path / "theirs").iterdir()) and "compiled again in each process" in result.stderr
