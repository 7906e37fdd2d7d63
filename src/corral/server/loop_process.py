"""The control loop in a process of its own, so that it and the API each have a core (and an interpreter lock).

In one process, the API's request threads and the loop's thread take turns at one interpreter lock: a second core
made the server no faster (``benchmarks/README.md``). Here the server starts ``python -m
corral.server.loop_process``, which runs the :class:`~corral.scheduler.loop.Controller` with its own backend and
database engine; :class:`LoopProcess` stands for the controller in the server, with the same methods. Both share
the database, which stays the truth: a submission is committed by the API before the loop hears of it.

The two talk over the child's standard input and a pipe, one JSON object a line:

- to the loop: ``{"op": "submitted", "jobs": [[field, …], …]}`` (each a :class:`QueuedJob`), ``dequeued``,
  ``terminate`` and ``preempt`` with an ``id``, ``policy``, ``wake``, and ``health`` with a request id;
- from it: ``{"ready": pid}`` once it has recovered the runs, ``{"ended": [job ids]}`` after each pass that ended
  jobs (the server wakes their waiters), and ``{"health": {...}, "id": n}``.

Crash safety is the single process's: the child holds the home's lock with the server (inherited), dies with it
(``PR_SET_PDEATHSIG``: a server killed leaves no loop running), and ends when its input closes (the server
stopped). A child that ends on its own is started again; it recovers the runs from the database as a restarted
server does, and what it was told meanwhile is read back from the database.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import IO, Any

import orjson

from corral.backends.base import Backends
from corral.backends.registry import RayConfig, create_backends
from corral.scheduler.loop import Controller
from corral.scheduler.policy import QueuedJob
from corral.scheduler.ports import PortAllocator
from corral.server.process import end_child
from corral.server.settings import Settings
from corral.store import sealed
from corral.store.db import Database

log = logging.getLogger(__name__)

#: Seconds a health request waits for the loop's process to answer (its reader thread, not the loop, answers).
HEALTH_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


class LoopProcess:
    """The server's side: the controller's methods, each a line to the child; the child's lines, read by a
    thread of its own."""

    def __init__(self, settings: Settings, *, on_jobs_ended: Callable[[list[int]], None], keep_fds: tuple[int, ...]):
        self._settings = settings
        self._on_jobs_ended = on_jobs_ended
        #: Inherited by the child: the home's lock, held while either process lives.
        self._keep_fds = keep_fds
        self._process: subprocess.Popen[bytes] | None = None
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
        self._health_ids = itertools.count(1)
        #: Health requests waiting for the child's answer, by id.
        self._health: dict[int, Future[dict[str, object]]] = {}
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start the child and wait until it has recovered the runs (as the controller's ``start`` does)."""
        process = self._spawn()
        assert process.stdout is not None
        while "ready" not in (message := orjson.loads(process.stdout.readline() or b"{}")):
            if not message:
                code = process.wait()
                raise RuntimeError(f"the control loop's process ended as it started (exit {code}): its log says why")
            self._heard(message)  # jobs its recovery ended
        self._watcher = threading.Thread(target=self._watch, name="corral-loop-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral.server.loop_process", str(os.getpid()), *map(str, self._keep_fds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=self._keep_fds,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the server, which stops the loop in order
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(self._settings.model_dump_json().encode() + b"\n")
        process.stdin.flush()
        self._process = process
        return process

    def _watch(self) -> None:
        while True:
            process = self._process
            assert process is not None and process.stdout is not None
            for line in process.stdout:
                self._heard(orjson.loads(line))
            code = process.wait()
            for ident in list(self._health):
                self._answer(ident, _not_passing("stopped"))
            if self._stopping.is_set():
                log.info("the control loop's process ended (exit %s)", code)
                return
            log.error("the control loop's process ended (exit %s): starting it again", code)
            while not self._stopping.wait(1.0):
                try:
                    self._spawn()
                    break
                except OSError:
                    log.exception("could not start the control loop's process: trying again in 1 s")
            if self._stopping.is_set():
                return

    def _heard(self, message: dict[str, Any]) -> None:
        if "ended" in message:
            self._on_jobs_ended(message["ended"])
        elif "health" in message:
            self._answer(message["id"], message["health"])
        elif "ready" in message:
            log.info("the control loop's process (pid %s) runs again", message["ready"])

    def _answer(self, ident: int, report: dict[str, object]) -> None:
        waiting = self._health.pop(ident, None)
        if waiting is not None:
            waiting.set_result(report)

    def _send(self, message: dict[str, object]) -> bool:
        process = self._process
        if process is None or process.stdin is None:
            return False
        with self._send_lock:
            try:
                process.stdin.write(orjson.dumps(message) + b"\n")
                process.stdin.flush()
            except (OSError, ValueError):  # it ended: its successor reads what it missed from the database
                return False
        return True

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is None:
            return
        end_child(process, self._send_lock, what="the control loop's process", timeout=15)
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    # ------------------------------------------------------------ the controller's methods

    def wake(self) -> None:
        self._send({"op": "wake"})

    def health(self) -> dict[str, object]:
        ident = next(self._health_ids)
        answer = self._health[ident] = Future()
        try:
            if self._send({"op": "health", "id": ident}):
                report = answer.result(timeout=HEALTH_SECONDS)
                return {**report, "pid": self._process.pid if self._process else None}  # the loop's own process
        except FuturesTimeout:
            pass
        self._health.pop(ident, None)
        running = self._process is not None and self._process.poll() is None
        return _not_passing("stuck" if running else "stopped")  # stuck: alive, and not answering

    def jobs_submitted(self, jobs: list[QueuedJob]) -> None:
        self._send({"op": "submitted", "jobs": [dataclasses.astuple(job) for job in jobs]})

    def job_dequeued(self, job_id: int) -> None:
        self._send({"op": "dequeued", "id": job_id})

    def policy_changed(self) -> None:
        self._send({"op": "policy"})

    def preempt_node(self, node_id: int) -> None:
        self._send({"op": "preempt", "id": node_id})

    def request_terminate(self, job_id: int) -> None:
        self._send({"op": "terminate", "id": job_id})


def _not_passing(status: str) -> dict[str, object]:
    """What health says of a loop whose process does not answer (``scheduler/liveness.py`` says the rest)."""
    return {"status": status, "last_pass_seconds_ago": None, "failures_in_a_row": 0}


# ---------------------------------------------------------------- the loop's parts, in either process


def build_controller(
    settings: Settings, on_jobs_ended: Callable[[list[int]], None]
) -> tuple[Controller, Callable[[], None]]:
    """The control loop with a database engine and a backend of its own, for its own process
    (:mod:`corral.server.loop_process`); and what closes them once it has stopped."""
    db = Database(settings.db_url)
    sealed.use_key_file(settings.secrets_key_file)
    backends = backends_of(settings)

    def closing() -> None:
        backends.close()
        db.dispose()

    return controller_of(settings, db, backends, on_jobs_ended), closing


def backends_of(settings: Settings) -> Backends:
    ray = None
    if settings.ray_address:
        ray = RayConfig(
            settings.ray_address, settings.ray_node_root, settings.ray_node_resource, settings.ray_namespace
        )
    return create_backends(
        home=settings.home,
        code_dir=settings.code_dir,
        isolate_users=settings.isolates_users,
        ray=ray,
        input_cache_limit=settings.input_cache_limit,
    )


def controller_of(
    settings: Settings, db: Database, backends: Backends, on_jobs_ended: Callable[[list[int]], None]
) -> Controller:
    return Controller(
        db=db,
        backends=backends,
        on_jobs_ended=on_jobs_ended,
        tick_seconds=settings.scheduler_tick,
        coalesce_seconds=settings.scheduler_coalesce,
        ports=PortAllocator(*settings.ports),
        fairshare_half_life=settings.fairshare_half_life,
    )


# ---------------------------------------------------------------- the child


def _die_with(parent: int) -> None:
    """SIGKILL this process when the server's process ends (as if one process had been killed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)


class _Channel:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: dict[str, object]) -> None:
        with self._lock:
            self._out.write(orjson.dumps(message) + b"\n")
            self._out.flush()


def main() -> None:
    _die_with(int(sys.argv[1]))
    for fd in sys.argv[2:]:  # the home's lock: not for the jobs' processes to hold
        os.set_inheritable(int(fd), False)
    # The server stops it, by closing its input. A handler, not SIG_IGN: the jobs' processes would inherit that.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Its lines go on a pipe of their own: fd 1 becomes the log, for whatever a library prints.
    channel = _Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    commands = sys.stdin.buffer
    settings = Settings.model_validate_json(commands.readline())
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    sys.setswitchinterval(settings.gil_switch_interval)
    controller, closing = build_controller(settings, lambda ids: channel.send({"ended": ids}))

    def obey_all() -> None:  # until the input closes
        for line in commands:
            _obey(controller, channel, orjson.loads(line))

    # Told from the start, its recovery too (a long one must not fill the pipe and hold up the server's requests):
    # what it hears meanwhile waits in the controller's queues for its first pass.
    reader = threading.Thread(target=obey_all, name="corral-loop-commands", daemon=True)
    reader.start()
    try:
        controller.start()
        channel.send({"ready": os.getpid()})
        reader.join()
    finally:
        controller.stop()
        closing()


def _obey(controller: Controller, channel: _Channel, command: dict[str, Any]) -> None:
    op = command["op"]
    if op == "submitted":
        controller.jobs_submitted([QueuedJob(*fields) for fields in command["jobs"]])
    elif op == "dequeued":
        controller.job_dequeued(command["id"])
    elif op == "terminate":
        controller.request_terminate(command["id"])
    elif op == "preempt":
        controller.preempt_node(command["id"])
    elif op == "policy":
        controller.policy_changed()
    elif op == "wake":
        controller.wake()
    elif op == "health":
        channel.send({"health": controller.health(), "id": command["id"]})
    else:
        log.error("the control loop's process was sent %r, which it does not know", op)


if __name__ == "__main__":
    main()
