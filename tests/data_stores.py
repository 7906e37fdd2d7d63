"""Real object stores for the volume tests, started once per test session: S3 (moto's server) and Azure Blob
Storage (Azurite, from npm: ``scripts/setup.sh`` installs it under ``.tools/``). Both listen on 127.0.0.1 only.

Skipped where they cannot run (moto or Azurite missing); in CI (``CI=true``) a missing one fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Azurite's well-known development account and key (public: printed in Azure's documentation).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_KEY = {"access_key_id": "corral-test", "secret_access_key": "corral-test-secret"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            assert process.poll() is None, f"{what} exited with {process.returncode}"
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the volume tests: {reason}")
    pytest.skip(reason)


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=S3_KEY["access_key_id"], aws_secret_access_key=S3_KEY["secret_access_key"],
        )  # fmt: skip

    def volume(self, name: str, bucket: str, prefix: str = "") -> dict[str, Any]:
        """A volume spec for ``bucket`` (made if missing) on this server."""
        s3 = self.client()
        if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=bucket)
        spec = {"name": name, "kind": "s3", "bucket": bucket, "endpoint_url": self.endpoint, "region": "us-east-1"}
        return {**spec, "prefix": prefix, "credentials": dict(S3_KEY)}


@dataclass
class AzuriteServer:
    endpoint: str
    process: subprocess.Popen[bytes]

    def container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.endpoint};"
        )
        service = BlobServiceClient.from_connection_string(connection)
        if not service.get_container_client(name).exists():
            service.create_container(name)

    def volume(self, name: str, container: str, prefix: str = "") -> dict[str, Any]:
        self.container(container)
        return {
            "name": name, "kind": "azureblob", "account": AZURITE_ACCOUNT, "container": container, "prefix": prefix,
            "endpoint": self.endpoint, "credentials": {"account_key": AZURITE_KEY},
        }  # fmt: skip


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("moto"))
    assert server.process is not None
    try:
        yield S3Server(server.endpoint, server.process)
    finally:
        server.stop()


def azurite_binary() -> str | None:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    binary = azurite_binary()
    if binary is None:
        _missing("Azurite is not installed (scripts/setup.sh installs it with npm into .tools/)")
    assert binary is not None
    port = _free_port()
    data = tmp_path_factory.mktemp("azurite")
    log = open(data / "azurite.log", "wb")  # noqa: SIM115
    argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data), "--silent",
            "--skipApiVersionCheck", "--loose"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        _wait_port(port, process, "Azurite")
        yield AzuriteServer(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", process)
    finally:
        process.kill()
        process.wait()
        log.close()


@dataclass
class StoppableS3:
    """An S3 server of a test's own, which the test stops and starts again (on the same port; empty again)."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    #: Where it listens: loopback, or the bridge of the Ray tests' hosts (198.18.0.1), which they reach.
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        binary = Path(sys.executable).with_name("moto_server")
        argv = [str(binary), "-H", self.host, "-p", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log)
        _wait_port(self.port, self.process, "moto's S3 server", self.host)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def volume(self, name: str, bucket: str, prefix: str = "") -> dict[str, Any]:
        assert self.process is not None
        return S3Server(self.endpoint, self.process).volume(name, bucket, prefix)


def start_s3_server(folder: Path, host: str = "127.0.0.1") -> StoppableS3:
    if not Path(sys.executable).with_name("moto_server").exists():
        _missing("moto's server is not installed (pip install 'moto[server]')")
    server = StoppableS3(_free_port(), folder / "moto.log", host=host)
    server.start()
    return server
