"""One thread that learns, without polling, when a watched process has ended.

Each process is watched through a pidfd (Linux ≥ 5.3) in one epoll set: it
becomes readable when the process exits, for our own children and for the
processes of an earlier server that we re-attached to alike. Children are reaped
here (no zombies); the callback runs on this thread and must be quick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Callback = Callable[[], None]


class ExitWatcher:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._read_wake, self._write_wake = os.pipe()
        os.set_blocking(self._read_wake, False)
        self._epoll.register(self._read_wake, select.EPOLLIN)
        self._watched: dict[int, tuple[int, subprocess.Popen[bytes] | None, Callback]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corral-exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, pid: int, callback: Callback, popen: subprocess.Popen[bytes] | None = None) -> bool:
        """Call ``callback`` once ``pid`` has ended; False if it had already gone."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            if popen is not None:
                popen.wait()
            return False
        with self._lock:
            self._watched[fd] = (pid, popen, callback)
        self._epoll.register(fd, select.EPOLLIN)
        return True

    def close(self) -> None:
        self._closed = True
        os.write(self._write_wake, b"x")
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed:
            for fd, _mask in self._epoll.poll():
                if fd == self._read_wake:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._read_wake, 64)
                    continue
                with self._lock:
                    entry = self._watched.pop(fd, None)
                self._epoll.unregister(fd)
                os.close(fd)
                if entry is None:
                    continue
                _pid, popen, callback = entry
                try:
                    if popen is not None:
                        popen.wait()
                    callback()
                except Exception:  # one bad report must not blind the watcher to every later exit
                    log.exception("handling the exit of pid %d failed", _pid)
        self._epoll.close()
        os.close(self._read_wake)
        os.close(self._write_wake)
