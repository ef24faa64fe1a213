"""Store backends for the tests: a local folder, ``memory://`` and a real S3 server over HTTP.

The S3 server is moto's, started once per test session as a separate process on
a loopback port it chooses itself, and s3fs talks to it over HTTP exactly as it
talks to AWS. It serves one request at a time: moto checks ``If-None-Match`` and
stores the object in two steps, and serialising requests makes that conditional
PUT atomic, as it is on S3 itself.

A server that cannot be imported or does not start fails the tests that need
it: the S3 backend is part of what the suite proves, not an optional extra.
"""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from imgdedup.pipeline.store import Store
from tests.store import s3_server

BUCKET = "imgdedup-test"


@dataclass(frozen=True)
class Location:
    """Where a test store lives: a URL plus fsspec storage options (JSON-serialisable)."""

    backend: str
    url: str
    options: dict = field(default_factory=dict)

    def open(self, **kwargs) -> Store:
        return Store(self.url, self.options, **kwargs)


@pytest.fixture(scope="session")
def s3_options(tmp_path_factory):
    """Storage options of a bucket on a moto S3 server started for this session."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401  (only checks the server extra is installed)
        import s3fs  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"S3 test server unavailable: {exc} (install the dev extra: moto[server], s3fs)")
    try:
        server = s3_server.start(tmp_path_factory.mktemp("s3"), BUCKET)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server.storage_options()
    finally:
        server.stop()


def new_location(backend: str, request: pytest.FixtureRequest, folder) -> Location:
    """A fresh, empty store location on ``backend`` (``local`` stores go under ``folder``)."""
    name = uuid.uuid4().hex
    if backend == "local":
        return Location("local", str(folder / name))
    if backend == "memory":
        return Location("memory", f"memory://{name}")
    return Location("s3", f"s3://{BUCKET}/{name}", request.getfixturevalue("s3_options"))


@pytest.fixture(params=["local", "memory", "s3"])
def location(request, tmp_path) -> Location:
    """A fresh, empty store location on each backend."""
    return new_location(request.param, request, tmp_path)


@pytest.fixture
def store(location) -> Store:
    return location.open()


@contextmanager
def header_rewrites_killed_after(monkeypatch, count: int):
    """``Store.replace_blob_header`` raising SystemExit once ``count`` headers were rewritten: a crash mid-rotation.

    Yields the ids rewritten so far; the real method is back when the block ends.
    """
    replace, done = Store.replace_blob_header, []

    def killed(self, blob_id, header):
        if len(done) == count:
            raise SystemExit("killed")
        replace(self, blob_id, header)
        done.append(blob_id)

    monkeypatch.setattr(Store, "replace_blob_header", killed)
    try:
        yield done
    finally:
        monkeypatch.setattr(Store, "replace_blob_header", replace)
