"""Engines, sessions and migrations.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across a process
crash, which is what a server killed with SIGKILL is) and takes its write lock
at ``BEGIN IMMEDIATE`` in write sessions, so two writers queue instead of
failing on a stale snapshot. Writers also queue on a lock of their own first, a
Python lock between this process's threads and a file lock (``<database>-writers``)
between the server's processes (the control loop's, the metrics reader's): SQLite's
own busy handler waits by sleeping (1, 2, 5, 10… ms), which would put sleeps on the
dispatch hot path, where a lock wakes its next waiter at once. PostgreSQL needs none
of this.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On the driver's connection: through ``exec_driver_sql`` (events, a result) it cost every transaction
        # (each submission, pass and read) 10-15 % more CPU, measured on a write of one select.
        conn.connection.driver_connection.execute(begin)

    return engine


class WriterLock:
    """One writer at a time among this process's threads (a Python lock) and among processes (``flock`` on a
    file beside the database: the kernel wakes the next waiter when it is released, and releases it when its
    holder dies)."""

    def __init__(self, path: str) -> None:
        self._threads = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def __del__(self) -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._fd)


def _writer_lock(url: str) -> AbstractContextManager[object]:
    """For a SQLite file, a :class:`WriterLock` beside it; for an in-memory one, a Python lock alone."""
    path = url.removeprefix("sqlite:///")
    if path in ("", ":memory:") or path == url or "mode=memory" in path:
        return threading.Lock()
    return WriterLock(path.split("?")[0] + "-writers")


class Database:
    """Two session factories over one database: ``write()`` and ``read()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.write_engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock: AbstractContextManager[object] = (
            _writer_lock(url) if self.is_sqlite else contextlib.nullcontext()
        )
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._write_lock, self._write() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    def migrate(self, revision: str = "head") -> None:
        with self.write_engine.connect() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()

    def dispose(self) -> None:
        self.write_engine.dispose()
        self.read_engine.dispose()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
