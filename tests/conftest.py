"""Shared fixtures: databases (SQLite always, PostgreSQL when CORRAL_TEST_POSTGRES_URL is set) and real servers.

A server here is the real thing: ``python -m corral.server`` in its own process,
on a free port, with a temporary home; tests talk to it over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.client.client import Client

pytest_plugins = ["tests.ray_hosts", "tests.data_stores", "tests.portal"]

PG_ADMIN_URL = os.environ.get("CORRAL_TEST_POSTGRES_URL")
# The client's config file of whoever runs the tests (their profiles, their current experiment) stays out of them.
os.environ["CORRAL_CONFIG"] = os.path.join(os.devnull, "corral-config.yaml")
for _variable in ("CORRAL_PROFILE", "CORRAL_WORKSPACE", "CORRAL_EXPERIMENT"):
    os.environ.pop(_variable, None)
DB_KINDS = ["sqlite", *(["postgres"] if PG_ADMIN_URL else [])]


def passable(home: Path) -> Path:
    """Let other accounts pass through the folders above a server's home (pytest makes them 0700), as they must
    for users' jobs to reach their own folders in it (docs/security.md)."""
    for folder in (home, *home.parents):
        if folder == Path(tempfile_root()):
            break
        with contextlib.suppress(OSError):
            folder.chmod(folder.stat().st_mode | 0o011)
    return home


def tempfile_root() -> str:
    import tempfile

    return tempfile.gettempdir()


@pytest.fixture(scope="session", autouse=True)
def _unix_accounts_made_by_tests() -> Iterator[None]:
    """A server that runs as root makes a Unix account for each user the tests create: remove those afterwards."""
    import pwd

    before = {entry.pw_name for entry in pwd.getpwall()}
    yield
    made = [e.pw_name for e in pwd.getpwall() if e.pw_name.startswith("corral-") and e.pw_name not in before]
    for name in made:
        subprocess.run(["userdel", name], capture_output=True, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def make_database(kind: str, home: Path) -> tuple[str, str | None]:
    """A fresh, empty database: (SQLAlchemy URL, name to drop after)."""
    if kind == "sqlite":
        return f"sqlite:///{home / 'corral.db'}", None
    import psycopg

    assert PG_ADMIN_URL is not None
    name = f"corral_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_database(name: str | None) -> None:
    if name is None:
        return
    import psycopg

    assert PG_ADMIN_URL is not None
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=DB_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url, name = make_database(request.param, tmp_path)
    yield url
    drop_database(name)


@dataclass
class ServerHandle:
    home: Path
    port: int
    database_url: str
    process: subprocess.Popen[bytes] | None = None
    clients: list[Client] = field(default_factory=list)
    #: Settings for this server (``CORRAL_*`` variables), e.g. smaller limits.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CORRAL_HOME": str(self.home),
            "CORRAL_SERVER": self.url,
            "CORRAL_DATABASE_URL": self.database_url,
            **self.settings,
        }

    def start(self) -> None:
        log = open(self.home / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "corral.server", "--home", str(self.home), "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.home / "server.log").read_text()
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, **kwargs: object) -> Client:
        c = Client(server=self.url, token=self.token, **kwargs)  # type: ignore[arg-type]
        self.clients.append(c)
        return c


def _kill_leftover_jobs(home: Path) -> None:
    """Tests must not leak job processes into each other: kill every node group of this home still alive."""
    from corral.backends.local.wrapper import wrapper_pids

    for exit_file, pid in wrapper_pids().items():
        if exit_file.startswith(str(home)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    handles: list[ServerHandle] = []
    created: list[str | None] = []

    def factory(kind: str = "sqlite", settings: dict[str, str] | None = None) -> ServerHandle:
        home = passable(tmp_path / f"home{len(handles)}")
        home.mkdir()
        url, name = make_database(kind, home)
        created.append(name)
        handle = ServerHandle(home=home, port=free_port(), database_url=url, settings=settings or {})
        handle.start()
        handles.append(handle)
        return handle

    yield factory
    for handle in handles:
        for c in handle.clients:
            c.close()
        handle.stop()
        _kill_leftover_jobs(handle.home)
    for name in created:
        drop_database(name)


@contextlib.contextmanager
def running_server(home: Path, kind: str, cluster: dict[str, Any]) -> Iterator[ServerHandle]:
    """A server in ``home`` on a new database of ``kind``, with ``cluster`` made; stopped and cleaned after."""
    url, name = make_database(kind, home)
    handle = ServerHandle(home=home, port=free_port(), database_url=url)
    handle.start()
    with handle.client() as c:
        c.create_cluster(cluster)
    try:
        yield handle
    finally:
        for c in handle.clients:
            c.close()
        handle.stop()
        _kill_leftover_jobs(home)
        drop_database(name)


@pytest.fixture(scope="module", params=DB_KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One server per test module and database kind, with a 4-node local cluster ``local``."""
    home = passable(tmp_path_factory.mktemp("home"))
    with running_server(home, request.param, {"name": "local", "scale": {"nodes": 4}}) as handle:
        yield handle


def process_gone(pid: int) -> bool:
    """The process no longer runs: there is no such process, or it is a zombie its parent has yet to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Wait for ``predicate()`` to hold; fail the test when it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)
