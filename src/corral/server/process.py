"""Run the server process: one per home (a lock file says so), pid file, uvicorn."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from corral.server.settings import Settings

log = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    pass


def end_child(process: subprocess.Popen[bytes], input_lock: threading.Lock, *, what: str, timeout: float) -> None:
    """End a child of the server that ends when its input closes (the control loop's process, the metrics
    reader): close it (under the lock its writers take), wait, and kill it after ``timeout`` seconds."""
    assert process.stdin is not None
    with input_lock, contextlib.suppress(OSError):
        process.stdin.close()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.error("%s did not stop within %g s: killing it", what, timeout)
        process.kill()
        process.wait()


def hold_home_lock(home: Path) -> int:
    """Lock ``<home>/server.lock`` for this process's life; two servers on one home would run jobs twice."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + DYING_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pid = (home / "server.pid").read_text().split()[0] if (home / "server.pid").exists() else "?"
            if _alive(pid) or time.monotonic() > deadline:
                os.close(fd)
                raise AlreadyRunning(f"a Corral server already runs with home {home} (pid {pid})") from None
            time.sleep(0.05)  # a server just killed: its control loop's process dies with it, and lets go


#: How long a new server waits for the lock of a server that is gone (its loop's process ending).
DYING_SECONDS = 5.0


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return True  # no pid file: a server starting; the lock is its
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


#: What in a home holds secrets or what jobs said: readable by the server's user alone.
PRIVATE_FILES = ("corral.db", "corral.db-wal", "corral.db-shm", "server.log", "token", "server.pid", "secrets.key")


def private_home(home: Path) -> None:
    """Everything the server writes is its user's alone (umask 077); a home made by an older version, or by
    hand, is closed too: the home 0700 (0711, passage only, stays: users' running jobs pass through it to their
    own folders), its database, WAL and logs 0600."""
    os.umask(0o077)
    home.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(home.stat().st_mode) != 0o711:
        home.chmod(0o700)
    for name in PRIVATE_FILES:
        path = home / name
        if path.exists():
            path.chmod(0o600)


def serve(settings: Settings) -> None:
    import uvicorn

    from corral.server.app import create_app

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    private_home(settings.home)
    lock = hold_home_lock(settings.home)
    # The control loop releases the GIL on every syscall (mkdir, fork, SQLite); with request threads busy,
    # CPython's default 5 ms switch interval makes it wait that long to get the GIL back each time.
    sys.setswitchinterval(settings.gil_switch_interval)
    settings.pid_file.write_text(f"{os.getpid()} {settings.host} {settings.port}\n")
    try:
        uvicorn.run(
            create_app(settings, keep_fds=(lock,)),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
    finally:
        if settings.pid_file.exists() and settings.pid_file.read_text().split()[0] == str(os.getpid()):
            settings.pid_file.unlink()
