"""Team-mode fixtures: a fresh PostgreSQL database, moto's S3 server, and `civicml server` on top of both.

Import the fixtures into a test module (``from team_mode import moto_s3, team_pg, team_server``).
All are session-scoped: one server for the whole run keeps the suite fast. Each
test uses its own registered-model name.

Without PostgreSQL the tests skip, except under CI=true, where that is a failure
(the same rule as ``postgres_db`` in conftest.py, which is function-scoped).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "civicml-team"
PREFIX = "artifacts"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def team_pg():
    """A new PostgreSQL database for the session's tracking server; dropped afterwards."""
    from conftest import fresh_postgres_database

    with fresh_postgres_database("civicml_team") as url:
        yield url


@dataclass
class MotoS3:
    """moto's standalone S3 server on loopback, in this process's threads; ``stop``/``start`` simulate an outage
    (moto keeps its buckets in memory across restarts)."""

    port: int
    server: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "") -> list[str]:
        out, token = [], None
        while True:
            kwargs = {"Bucket": BUCKET, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client().list_objects_v2(**kwargs)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]


@pytest.fixture(scope="session")
def moto_s3():
    s3 = MotoS3(free_port())
    s3.start()
    s3.client().create_bucket(Bucket=BUCKET)
    try:
        yield s3
    finally:
        s3.stop()


@dataclass
class TeamServer:
    url: str
    process: subprocess.Popen
    log: Path
    s3: MotoS3
    backend: str

    def settings(self, home: Path, **overrides):
        from civicml.settings import Settings

        return Settings.from_env(env={}, home=home, tracking_uri=self.url, **overrides)


def wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the tracking server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the tracking server did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    """End the server we started: its own process group (mlflow server spawns uvicorn)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # uvicorn waits for kept-alive client connections
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def team_server(team_pg, moto_s3, tmp_path_factory):
    """`civicml server` (mlflow server, PostgreSQL backend, proxied S3 artifacts) on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("team-server") / "server.log"
    env = {**os.environ, **AWS_ENV, "MLFLOW_S3_ENDPOINT_URL": moto_s3.endpoint}
    env.pop("CIVICML_ACCESS_FILE", None)
    command = [str(Path(sys.executable).with_name("civicml")), "server", "--backend-store-uri", team_pg,
               "--artifacts-destination", f"s3://{BUCKET}/{PREFIX}", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield TeamServer(url, process, log, moto_s3, team_pg)
    finally:
        stop_process(process)
