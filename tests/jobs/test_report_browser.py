"""The HTML report in a real browser: headless Chromium renders it and shows the numbers and thumbnails.

Chromium comes from Debian's packages and is installed by ``make browser``, never
by the test. Without it the test skips (a platform limit, tests/conftest.py),
unless IMGDEDUP_REQUIRE_BROWSER=1 (set by .ci/run after ``make browser``), where
a missing browser is a failure.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from imgdedup.jobs.report import write_report
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey
from tests.jobs.report_store import build_report_store

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"Chromium is not installed at {CHROMIUM} (run `make browser`)"
    if os.environ.get("IMGDEDUP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{message}; IMGDEDUP_REQUIRE_BROWSER=1 requires it")
    pytest.skip(message)


def rendered_dom(chromium: Path, page: Path, profile: Path) -> str:
    done = subprocess.run([str(chromium), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def headline_value(dom: str, name: str) -> str:
    match = re.search(rf'<dd id="{name}" data-value="(\d+)">([^<]*)</dd>', dom)
    assert match, f"headline {name} not rendered"
    return match.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory, test_data):
    return build_report_store(str(tmp_path_factory.mktemp("store")), test_data / "dev", GroupKey.generate(),
                              load_config())


def test_chromium_renders_the_headline_numbers_and_the_group_thumbnails(chromium, built, tmp_path):
    headline = write_report(built.store, tmp_path / "out", load_config(), key=built.key)
    dom = rendered_dom(chromium, tmp_path / "out" / "report.html", tmp_path / "profile")
    for name in ("images", "stored", "duplicates", "bytes_saved", "errors", "groups"):
        assert headline_value(dom, name) == str(headline[name])
    assert (headline["images"], headline["stored"], headline["duplicates"], headline["groups"]) == (8, 5, 3, 2)
    thumbnails = re.findall(r'<img class="thumb" alt="([0-9a-f]{32})" src="data:image/jpeg;base64,', dom)
    assert sorted(thumbnails) == sorted([g for g in built.groups] + [p for ps in built.groups.values() for p in ps])
    assert dom.count("<svg") == 3  # savings, distance histogram, class sizes


def test_chromium_renders_no_picture_without_the_key(chromium, built, tmp_path):
    write_report(built.store, tmp_path / "out", load_config())
    dom = rendered_dom(chromium, tmp_path / "out" / "report.html", tmp_path / "profile")
    assert "<img" not in dom and "data:image" not in dom
    assert 'id="no-key"' in dom
    assert headline_value(dom, "duplicates") == "3"
