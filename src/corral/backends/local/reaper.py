"""End what a job left behind outside its process groups.

A job's processes run in sessions of their own, and ``killpg`` (or a sweep of the
wrapper's session) ends whatever stayed in them. A program that calls ``setsid``
(a daemon, ``nohup setsid …``) leaves both and would outlive its job. Every
process Corral starts carries :data:`RUN_VARIABLE` (``<job uid>.<attempt>``) in its
environment, and children inherit it; once an attempt has ended, the reaper scans
``/proc`` for processes that still carry its value and SIGKILLs them.

The scan reads every process's environment, so it runs on its own thread, at most
every :data:`SCAN_SECONDS`, and only while attempts ended in the last few scans
(a process forked during one scan is caught by the next). A process that clears
its own environment escapes it; a cgroup would not, where one can be had.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

#: In every job process's environment: which attempt of which job it belongs to.
RUN_VARIABLE = "CORRAL_RUN_ID"
SCAN_SECONDS = 1.0
#: Scans during which an ended attempt's stragglers are looked for.
SCANS_PER_RUN = 3


def run_id(job_uid: str, attempt: int) -> str:
    return f"{job_uid}.{attempt}"


class Reaper:
    def __init__(self) -> None:
        #: Ended run ids -> scans left.
        self._ended: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="corral-reaper", daemon=True)
        self._thread.start()

    def ended(self, run: str) -> None:
        """The attempt ``run`` has ended: none of its processes may live on."""
        with self._lock:
            self._ended[run.encode()] = SCANS_PER_RUN
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            if self._closed:
                return
            with self._lock:
                targets = set(self._ended)
                for run in targets:
                    self._ended[run] -= 1
                    if self._ended[run] <= 0:
                        del self._ended[run]
                if not self._ended:
                    self._wake.clear()
            try:
                self.reap(targets)
            except Exception:  # a failed scan must not end the thread: the next one tries again
                log.exception("scanning for the leftovers of ended jobs failed")
            threading.Event().wait(SCAN_SECONDS)

    @staticmethod
    def reap(runs: set[bytes], variable: str = RUN_VARIABLE) -> int:
        """SIGKILL every process whose environment gives ``variable`` one of the values ``runs``; how many."""
        killed = 0
        me = os.getpid()
        needle = f"{variable}=".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            at = environ.find(needle)
            if at < 0 or (at > 0 and environ[at - 1] != 0):
                continue
            end = environ.find(b"\0", at)
            value = environ[at + len(needle) : end if end >= 0 else None]
            if value in runs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry), signal.SIGKILL)
                    killed += 1
        if killed:
            log.info("ended %d processes left behind by ended jobs", killed)
        return killed
