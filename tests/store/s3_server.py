"""A moto S3 server on loopback, in a process of its own: the store tests' and ``scripts/bench_store.py``'s.

It binds port 0 itself and then publishes the port it got (write and rename,
so the file appears whole): no other process can take the port between
choosing it and listening on it. Werkzeug's single-threaded server speaks
HTTP/1.0 and answers one request at a time, so no client holds the one request
slot with a kept-alive connection, and moto's two-step conditional PUT is
atomic, as it is on S3 itself. Every request is logged to the server's log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Importing moto and werkzeug alone takes several seconds, and far longer on a
# busy two-core machine; a start is only declared failed past this.
START_TIMEOUT = 180.0

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
class S3Server:
    """A running server: its process, its ``http://127.0.0.1:PORT`` endpoint and its request log."""

    process: subprocess.Popen
    endpoint: str
    log: Path

    def storage_options(self) -> dict:
        """fsspec (s3fs) options that reach this server."""
        return {"key": "testing", "secret": "testing",
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(folder: Path, bucket: str) -> S3Server:
    """Start a server logging to ``folder/server.log``, with ``bucket`` created.

    Raises
    ------
    RuntimeError
        The server exited or published no port within :data:`START_TIMEOUT`
        seconds; the message ends with the last lines of its log.
    """
    import boto3

    log, port_file = folder / "server.log", folder / "port"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-c", _SERVER_CODE, str(port_file)], stdout=out, stderr=out,
                                   env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            state = (f"exited with {process.returncode}" if process.poll() is not None
                     else f"published no port within {START_TIMEOUT:.0f} s")
            process.kill()
            process.wait()
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
            raise RuntimeError(f"the S3 server (moto) did not start ({state}): {tail or 'no output'} (log: {log})")
        time.sleep(0.05)
    server = S3Server(process, f"http://127.0.0.1:{int(port_file.read_text())}", log)
    try:
        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    except BaseException:
        server.stop()
        raise
    return server
