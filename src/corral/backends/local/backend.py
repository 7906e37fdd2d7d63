"""Run launch plans as process groups on this machine.

Each process of a job (and each node's ``prepare.command``) runs under the wrapper
(``wrapper.py``) in a new session, so its whole process tree is one process group:
``killpg`` reaches all of it and nothing is left behind (a launcher whose children
make groups of their own, mpirun, is swept by session when it ends). Exits are
reported through ``ExitWatcher``; the exit code is the one the wrapper wrote to
disk, so it survives a server crash.

An attempt goes through two phases: every node's prepare (when the job has one),
then, once all of them succeeded, every process. A failed prepare ends the others
and reports every process ``PREPARE_FAILED``; ``<attempt dir>/started`` marks the
second phase, so a restart knows which one it is in.

Launching (creating the job's directories, unpacking code, spawning) runs on a
few launcher threads: it is mostly system calls, which release the GIL, so the
control loop goes on with its next pass meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import signal
import subprocess
import tarfile
import threading
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from corral.backends.base import ExitKind, ExitListener, ProcessExit
from corral.backends.local.accounts import Account, account, check_dirs, give_dirs
from corral.backends.local.environment import server_environment
from corral.backends.local.reaper import RUN_VARIABLE, Reaper, run_id
from corral.backends.local.watcher import ExitWatcher
from corral.backends.local.wrapper import kill_session, read_exit, started, wrapper_argv, wrapper_pids
from corral.launch.layout import (
    CHECKPOINT_LATEST,
    FIRST_FAILURE,
    STARTED_MARKER,
    prepare_exit,
    rank_exit,
)
from corral.launch.plan import LaunchPlan, NodePlan, ProcessPlan

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """What the backend keeps about one plan while it runs (guarded by the backend's lock)."""

    plan: LaunchPlan
    #: The Unix account its processes run as (None: the server's).
    account: Account | None = None
    #: exit file -> pid of each wrapper alive.
    pids: dict[str, int] = field(default_factory=dict)
    #: A signal asked for the whole plan: whatever starts later gets it at once.
    signalled: signal.Signals | None = None
    #: Node ranks whose prepare has not ended yet.
    preparing: set[int] = field(default_factory=set)
    #: (node rank, exit code or None when lost) of the first prepare that failed.
    prepare_failure: tuple[int, int | None] | None = None
    started: set[int] = field(default_factory=set)


class LocalBackend:
    def __init__(
        self,
        *,
        code_dir: Path,
        home: Path | None = None,
        base_env: dict[str, str] | None = None,
        launcher_threads: int = 4,
    ) -> None:
        self._code_dir = code_dir
        #: The server's home: folders of it above a job's own are opened for passage when the job has an account.
        self._home = home or code_dir.parent
        self._base_env = server_environment() if base_env is None else dict(base_env)
        self._listener: ExitListener | None = None
        self._watcher = ExitWatcher()
        self._reaper = Reaper()
        self._launcher = ThreadPoolExecutor(launcher_threads, thread_name_prefix="corral-launcher")
        self._attempts: dict[tuple[str, int], _Attempt] = {}
        self._lock = threading.Lock()

    def set_listener(self, listener: ExitListener) -> None:
        self._listener = listener

    def _attempt(self, plan: LaunchPlan) -> _Attempt:
        with self._lock:
            state = self._attempts.get((plan.job_uid, plan.attempt))
            if state is None:
                state = self._attempts[(plan.job_uid, plan.attempt)] = _Attempt(plan)
            return state

    # ------------------------------------------------------------ launch

    def launch(self, plan: LaunchPlan) -> None:
        """Start the plan on a launcher thread; a process that cannot start is reported ``LAUNCH_FAILED``."""
        self._launcher.submit(self._launch_now, self._attempt(plan))

    def _launch_now(self, state: _Attempt) -> None:
        plan = state.plan
        try:
            lay_out(
                _owner(state),
                within=self._home,
                dirs=(*plan.shared_dirs, *(node.workdir for node in plan.nodes)),
                files=plan.files,
                code=[
                    (node.workdir, self._code_dir / f"{node.code_archive}.tar.gz")
                    for node in plan.nodes
                    if node.code_archive
                ],
                owned=plan.owned_dirs,
            )
            if plan.has_prepare:
                self._start_prepare(state)
            else:
                self._start_processes(state)
        except Exception as exc:
            self._launch_failed(state, exc)

    def _launch_failed(self, state: _Attempt, exc: Exception) -> None:
        log.exception("launch of job %s failed", state.plan.job_uid)
        self.signal(state.plan, kill=True)  # the processes already started report their (killed) ends
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            missing = [p for p in state.plan.processes if p.rank not in state.started]
        for process in missing:
            self._emit(state.plan, process.rank, ExitKind.LAUNCH_FAILED, None, message)

    def _spawn(
        self, state: _Attempt, exit_file: str, workdir: str, command: str, out: str, err: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        owner, run = _owner(state), run_id(state.plan.job_uid, state.plan.attempt)
        full = {**self._base_env, **(owner.environment(workdir) if owner else {}), **env, RUN_VARIABLE: run}
        popen = spawn_wrapper(owner, full, exit_file, workdir, command, out, err)
        with self._lock:
            state.pids[exit_file] = popen.pid
            pending = state.signalled
        if pending is not None:  # signalled while it was being launched
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, pending)
        return popen

    def _start_prepare(self, state: _Attempt) -> None:
        nodes = [node for node in state.plan.nodes if node.prepare_command]
        with self._lock:
            state.preparing = {node.rank for node in nodes}
        for node in nodes:
            assert node.prepare_command is not None
            log_file = node.prepare_log
            exit_file = prepare_exit(state.plan.attempt_dir, node.rank)
            popen = self._spawn(
                state, exit_file, node.workdir, node.prepare_command, log_file, log_file, node.prepare_env
            )
            ended = functools.partial(self._prepare_ended, state, node, popen.pid, popen)
            self._watcher.watch(popen.pid, ended, popen)

    def _start_processes(self, state: _Attempt) -> None:
        plan = state.plan
        if plan.has_prepare:
            Path(plan.attempt_dir, STARTED_MARKER).touch()
        workdirs = {node.rank: node.workdir for node in plan.nodes}
        resumed = resumed_from(plan)
        for process in plan.processes:
            env = process.env if resumed is None else {**process.env, "CORRAL_RESUMED_FROM": resumed}
            exit_file = rank_exit(plan.attempt_dir, process.rank)
            popen = self._spawn(
                state, exit_file, workdirs[process.node_rank], process.command, process.stdout, process.stderr, env
            )
            with self._lock:
                state.started.add(process.rank)
            ended = functools.partial(self._process_ended, state, process, popen.pid, popen)
            self._watcher.watch(popen.pid, ended, popen)

    def _start_processes_or_fail(self, state: _Attempt) -> None:
        try:
            self._start_processes(state)
        except Exception as exc:
            self._launch_failed(state, exc)

    # ------------------------------------------------------------ exits

    def _ended(
        self,
        state: _Attempt,
        exit_file: str,
        pid: int | None,
        popen: subprocess.Popen[bytes] | None = None,
        *,
        sweep: bool = False,
    ) -> int | None:
        """Clean up after a wrapper that ended; its exit code (:func:`wrapper_code`), or None."""
        if pid is not None:
            if sweep:
                kill_session(pid)
            # Whatever the command left in its group (background children) goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with self._lock:
            state.pids.pop(exit_file, None)
            signalled = state.signalled is not None
        return wrapper_code(exit_file, popen, signalled)

    def _prepare_ended(
        self, state: _Attempt, node: NodePlan, pid: int | None, popen: subprocess.Popen[bytes] | None = None
    ) -> None:
        code = self._ended(state, prepare_exit(state.plan.attempt_dir, node.rank), pid, popen)
        with self._lock:
            state.preparing.discard(node.rank)
            first = code != 0 and state.prepare_failure is None
            if first:
                state.prepare_failure = (node.rank, code)
            remaining = bool(state.preparing)
            failure = state.prepare_failure
            others = list(state.pids.values()) if first else []
        for other in others:  # no process starts now: the other nodes need not finish preparing
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(other, signal.SIGTERM)
        if remaining:
            return
        if failure is None:
            self._launcher.submit(self._start_processes_or_fail, state)
            return
        rank, failed_code = failure
        name = state.plan.nodes[rank].node_name
        if failed_code is None:
            message = f"prepare.command on node {rank} ({name}) vanished without an exit code"
        else:
            message = f"prepare.command failed on node {rank} ({name}) with exit code {failed_code}"
        for process in state.plan.processes:
            self._emit(state.plan, process.rank, ExitKind.PREPARE_FAILED, failed_code, message)

    def _process_ended(
        self, state: _Attempt, process: ProcessPlan, pid: int | None, popen: subprocess.Popen[bytes] | None = None
    ) -> None:
        code = self._ended(
            state, rank_exit(state.plan.attempt_dir, process.rank), pid, popen, sweep=process.sweep_session
        )
        self._report(state.plan, process, code)

    def _report(self, plan: LaunchPlan, process: ProcessPlan, code: int | None) -> None:
        if code is None:
            self._emit(plan, process.rank, ExitKind.LOST, None, None)
            return
        self._emit(plan, process.rank, ExitKind.EXITED, code, first_failure(plan) if code != 0 else None)

    def _emit(self, plan: LaunchPlan, rank: int, kind: ExitKind, code: int | None, message: str | None) -> None:
        if self._listener is not None:
            self._listener(ProcessExit(plan.job_uid, plan.attempt, rank, kind, code, message))

    # ------------------------------------------------------------ recovery

    def recover(self, plan: LaunchPlan) -> None:
        state = self._attempt(plan)
        live = wrapper_pids()
        if plan.has_prepare and not os.path.exists(os.path.join(plan.attempt_dir, STARTED_MARKER)):
            nodes = [node for node in plan.nodes if node.prepare_command]
            if not any(started(prepare_exit(plan.attempt_dir, n.rank), n.prepare_log, live) for n in nodes):
                for process in plan.processes:  # stopped before its first prepare (its folders made or not)
                    self._emit(plan, process.rank, ExitKind.NOT_STARTED, None, None)
                return
            with self._lock:
                state.preparing = {node.rank for node in nodes}
            for node in nodes:
                exit_file = prepare_exit(plan.attempt_dir, node.rank)
                self._reattach(state, exit_file, live, functools.partial(self._prepare_ended, state, node))
            return
        for process in plan.processes:
            exit_file = rank_exit(plan.attempt_dir, process.rank)
            if not started(exit_file, process.stdout, live):  # stopped before this one's wrapper started
                self._emit(plan, process.rank, ExitKind.NOT_STARTED, None, None)
                continue
            with self._lock:
                state.started.add(process.rank)
            self._reattach(state, exit_file, live, functools.partial(self._process_ended, state, process))

    def _reattach(
        self, state: _Attempt, exit_file: str, live: dict[str, int], ended: Callable[[int | None], None]
    ) -> None:
        pid = live.get(exit_file)
        if pid is None or read_exit(exit_file) is not None:
            ended(None)  # ended while no server watched: its exit file says how (or nothing: lost)
            return
        with self._lock:
            state.pids[exit_file] = pid
        if not self._watcher.watch(pid, functools.partial(ended, pid)):
            ended(pid)

    # ------------------------------------------------------------ signals

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        sig = signal.SIGKILL if kill else signal.SIGTERM
        state = self._attempt(plan)
        with self._lock:
            state.signalled = sig
            pids = list(state.pids.values())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def forget(self, plan: LaunchPlan) -> None:
        """The plan's attempt has ended: drop what was kept for signalling it, and end what it left behind."""
        with self._lock:
            self._attempts.pop((plan.job_uid, plan.attempt), None)
        self._reaper.ended(run_id(plan.job_uid, plan.attempt))

    def end_unplanned(self, job_uid: str, attempt: int, ips: Collection[str]) -> None:
        self._reaper.ended(run_id(job_uid, attempt))  # one machine: this one

    def close(self) -> None:
        self._launcher.shutdown(wait=True)
        self._watcher.close()
        self._reaper.close()


def _owner(state: _Attempt) -> Account | None:
    """The account the plan's processes run as, looked up once (also for an attempt re-attached after a restart,
    whose processes may start only now, after its prepare)."""
    if state.plan.run_as and state.account is None:
        state.account = account(state.plan.run_as)
    return state.account


def lay_out(
    owner: Account | None,
    *,
    within: Path,
    dirs: Iterable[str],
    files: Iterable[tuple[str, str]] = (),
    code: Iterable[tuple[str, Path | bytes]] = (),
    owned: tuple[str, ...] = (),
) -> None:
    """Make a job's folders and files and unpack its code (a gzipped tar: its file, or its bytes) into each
    working directory; with ``owner``, check first that it may have ``owned`` and give them to it at the end."""
    if owner is not None:
        check_dirs(owner, owned, within=within)
    for path in dirs:
        os.makedirs(path, exist_ok=True)
    for path, content in files:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_text(content)
    for workdir, archive in code:
        os.makedirs(workdir, exist_ok=True)
        source = {"name": archive} if isinstance(archive, Path) else {"fileobj": io.BytesIO(archive)}
        with tarfile.open(mode="r", **source) as tar:
            tar.extractall(workdir, filter="data")
    if owner is not None:
        give_dirs(owner, owned, within=within)


def spawn_wrapper(
    owner: Account | None, env: dict[str, str], exit_file: str, workdir: str, command: str, out: str, err: str
) -> subprocess.Popen[bytes]:
    """Start ``command`` under the wrapper, in a session of its own, as ``owner`` (None: this process's user)."""
    argv = wrapper_argv(exit_file, workdir, command, out, err)
    return subprocess.Popen(
        # Not Popen's user=: switching there forbids vfork, and forking the whole server cost ~10 ms a job.
        owner.command(argv) if owner else argv,
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def first_failure(plan: LaunchPlan) -> str | None:
    """Which rank failed first, where a launcher (mpirun) ran many ranks as one process and recorded it."""
    with contextlib.suppress(OSError, ValueError):
        rank, rank_code = Path(plan.attempt_dir, FIRST_FAILURE).read_text().split()
        return f"rank {int(rank)} exited with code {int(rank_code)} (the first to fail)"
    return None


def resumed_from(plan: LaunchPlan) -> str | None:
    """The job's newest checkpoint, when there is one: a new attempt starts from it."""
    folder = plan.checkpoint_dir
    if not folder:
        return None
    try:
        name = Path(folder, CHECKPOINT_LATEST).read_text().strip()
    except OSError:
        return None
    path = Path(folder, name)
    return str(path) if name and path.exists() else None


def wrapper_code(exit_file: str, popen: subprocess.Popen[bytes] | None, signalled: bool) -> int | None:
    """How a wrapper ended: the code it recorded. A wrapper of this process (``popen``, reaped) that Corral itself
    had ``signalled`` and that a signal killed before it could record a code (SIGKILL after the grace period;
    SIGTERM before its trap was set, a job stopped as it starts) ended as a shell says: 128 + the signal. Else None:
    lost (killed by something else, or re-attached after a restart and ended recording nothing)."""
    code = read_exit(exit_file)
    if code is None and signalled and popen is not None and popen.returncode is not None and popen.returncode < 0:
        return 128 - popen.returncode
    return code
