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

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imgdedup.pipeline.store import Store

BUCKET = "imgdedup-test"
# Importing moto and werkzeug alone takes several seconds, and far longer on a
# busy two-core machine; a start is only declared failed past this.
SERVER_START_TIMEOUT = 180.0

# The server binds port 0 itself and then publishes the port it got (write and
# rename, so the file appears whole): no other process can take the port between
# choosing it and listening on it. Werkzeug's single-threaded server speaks
# HTTP/1.0, so no client holds the one request slot with a kept-alive connection.
_SERVER_CODE = """
import os, sys
from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app),
                     threaded=False, request_handler=MotoRequestHandler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
"""


@dataclass(frozen=True)
class Location:
    """Where a test store lives: a URL plus fsspec storage options (JSON-serialisable)."""

    backend: str
    url: str
    options: dict = field(default_factory=dict)

    def open(self, **kwargs) -> Store:
        return Store(self.url, self.options, **kwargs)


def _wait_for_port_file(port_file: Path, process: subprocess.Popen, timeout: float) -> int | None:
    """The port the server published, or None if it exited or did not publish within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def s3_options(tmp_path_factory):
    """Storage options of a bucket on a moto S3 server started for this session."""
    try:
        import boto3
        import moto.server  # noqa: F401  (only checks the server extra is installed)
        import s3fs  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"S3 test server unavailable: {exc} (install the dev extra: moto[server], s3fs)")
    folder = tmp_path_factory.mktemp("s3")
    log_path, port_file = folder / "server.log", folder / "port"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-c", _SERVER_CODE, str(port_file)],
                                   stdout=log, stderr=log, env=env)
    try:
        port = _wait_for_port_file(port_file, process, timeout=SERVER_START_TIMEOUT)
        if port is None:
            state = f"exited with {process.returncode}" if process.poll() is not None else \
                f"published no port within {SERVER_START_TIMEOUT:.0f} s"
            pytest.fail(f"S3 test server (moto) did not start ({state}): {_tail(log_path) or 'no output'} "
                        f"(log: {log_path})")
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        yield {
            "key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
