"""Store backends for the tests: a local folder, ``memory://`` and a real S3 server over HTTP.

The S3 server is moto's, started once per test session as a separate process on
a loopback port, and s3fs talks to it over HTTP exactly as it talks to AWS. It
serves one request at a time: moto checks ``If-None-Match`` and stores the
object in two steps, and serialising requests makes that conditional PUT atomic,
as it is on S3 itself.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import pytest

from pipeline.store import Store

BUCKET = "imgdedup-test"

_SERVER_CODE = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"""


@dataclass(frozen=True)
class Location:
    """Where a test store lives: a URL plus fsspec storage options (JSON-serialisable)."""

    backend: str
    url: str
    options: dict = field(default_factory=dict)

    def open(self, **kwargs) -> Store:
        return Store(self.url, self.options, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def s3_options(tmp_path_factory):
    """Storage options of a bucket on a moto S3 server started for this session."""
    try:
        import boto3
        import moto.server  # noqa: F401  (only checks the server extra is installed)
        import s3fs  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"S3 test server unavailable: {exc} (install the dev extra: moto[server], s3fs)")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("s3") / "server.log", "wb")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    process = subprocess.Popen([sys.executable, "-c", _SERVER_CODE, str(port)], stdout=log, stderr=log, env=env)
    try:
        if not _wait_for_port(port, process, timeout=20):
            pytest.skip(f"S3 test server did not start on 127.0.0.1:{port} (see {log.name})")
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
        process.wait(timeout=10)
        log.close()


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
