"""A real S3 HTTP server on loopback for the store's object-storage tests: moto's standalone
server (`python -m moto.server`), started as its own process, with one bucket and one IAM
user whose keys V6 uses; then moto's request authentication is switched on, so a wrong
key is refused as AWS refuses it (403 InvalidAccessKeyId)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

START_S = 30.0
REGION = "us-east-1"


@dataclass(frozen=True)
class S3World:
    endpoint: str
    bucket: str
    key_id: str
    secret: str

    def root(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def options(self, **override: str) -> dict[str, str]:
        """deltalake storage options for this server, as a user writes them for MinIO."""
        return {
            "aws_endpoint_url": self.endpoint,
            "aws_region": REGION,
            "aws_access_key_id": self.key_id,
            "aws_secret_access_key": self.secret,
            "aws_allow_http": "true",
            "aws_conditional_put": "etag",
            **override,
        }

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session", name="s3_world")
def s3_world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3World]:
    log_path: Path = tmp_path_factory.mktemp("moto") / "moto.log"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_up(proc, endpoint, log_path)
        world = _provision(endpoint)
        # From now on every request must be signed with a key moto's IAM knows.
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0", timeout=5).raise_for_status()
        yield world
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _wait_up(proc: subprocess.Popen[bytes], endpoint: str, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                pytest.fail(f"moto server not up after {START_S:.0f}s: {log.read_text()[-2000:]}")
            time.sleep(0.1)


def _provision(endpoint: str) -> S3World:
    """A bucket and a user with full S3 access, made before authentication is enforced."""
    anon = {"endpoint_url": endpoint, "region_name": REGION}
    creds = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
    boto3.client("s3", **anon, **creds).create_bucket(Bucket="v6-book")
    iam = boto3.client("iam", **anon, **creds)
    iam.create_user(UserName="v6")
    allow_s3 = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [allow_s3]})
    iam.put_user_policy(UserName="v6", PolicyName="v6-s3", PolicyDocument=policy)
    key = iam.create_access_key(UserName="v6")["AccessKey"]
    return S3World(endpoint, "v6-book", key["AccessKeyId"], key["SecretAccessKey"])
