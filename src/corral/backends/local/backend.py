"""Run launch plans as process groups on this machine.

Each node of a job runs the wrapper (``wrapper.py``) in a new session, so the
node's whole process tree is one process group: ``killpg`` reaches all of it
and nothing is left behind. Exits are reported through ``ExitWatcher``; the
exit code is the one the wrapper wrote to disk, so it survives a server crash.

Launching (creating the job's directories, unpacking code, spawning) runs on a
few launcher threads: it is mostly system calls, which release the GIL, so the
control loop goes on with its next pass meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from corral.backends.base import ExitKind, ExitListener, NodeExit
from corral.backends.local.watcher import ExitWatcher
from corral.backends.local.wrapper import WRAPPER_NAME, WRAPPER_SCRIPT, parse_exit_file
from corral.launch.plan import LaunchPlan, NodePlan

log = logging.getLogger(__name__)


class LocalBackend:
    def __init__(self, *, code_dir: Path, base_env: dict[str, str] | None = None, launcher_threads: int = 4) -> None:
        self._code_dir = code_dir
        self._base_env = dict(os.environ if base_env is None else base_env)
        if base_env is None and sys.prefix != sys.base_prefix:
            # The server runs in a virtual environment: jobs find its python first, as `corral` users expect.
            bin_dir = os.path.dirname(sys.executable)
            self._base_env["PATH"] = bin_dir + os.pathsep + self._base_env.get("PATH", "")
        self._listener: ExitListener | None = None
        self._watcher = ExitWatcher()
        self._launcher = ThreadPoolExecutor(launcher_threads, thread_name_prefix="corral-launcher")
        #: (job uid, attempt, rank) -> wrapper pid, while it runs.
        self._pids: dict[tuple[str, int, int], int] = {}
        #: Plans being launched, so a signal that comes first is not lost.
        self._signalled: dict[tuple[str, int], signal.Signals] = {}
        self._lock = threading.Lock()

    def set_listener(self, listener: ExitListener) -> None:
        self._listener = listener

    # ------------------------------------------------------------ launch

    def launch(self, plan: LaunchPlan) -> None:
        """Start the plan on a launcher thread; a node that cannot start is reported ``LAUNCH_FAILED``."""
        self._launcher.submit(self._launch_now, plan)

    def _launch_now(self, plan: LaunchPlan) -> None:
        started = 0
        try:
            for path in plan.shared_dirs:
                os.makedirs(path, exist_ok=True)
            for node in plan.nodes:
                self._launch_node(plan, node)
                started += 1
        except Exception as exc:
            log.exception("launch of job %s failed", plan.job_uid)
            self.signal(plan, kill=True)  # the nodes already started report their (killed) ends
            message = f"{type(exc).__name__}: {exc}"
            for node in plan.nodes[started:]:
                if self._listener is not None:
                    self._listener(
                        NodeExit(plan.job_uid, plan.attempt, node.rank, ExitKind.LAUNCH_FAILED, None, message)
                    )

    def _launch_node(self, plan: LaunchPlan, node: NodePlan) -> None:
        key = (plan.job_uid, plan.attempt, node.rank)
        os.makedirs(node.workdir, exist_ok=True)
        if node.code_archive:
            with tarfile.open(self._code_dir / f"{node.code_archive}.tar.gz") as tar:
                tar.extractall(node.workdir, filter="data")
        process = node.processes[0]
        argv = [
            "/bin/sh",
            "-c",
            WRAPPER_SCRIPT,
            WRAPPER_NAME,
            node.exit_file,
            node.workdir,
            process.command,
            node.prepare_command or "",
            process.stdout,
            process.stderr,
            node.prepare_log,
        ]
        popen = subprocess.Popen(
            argv,
            env={**self._base_env, **process.env},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self._lock:
            self._pids[key] = popen.pid
            pending = self._signalled.get((plan.job_uid, plan.attempt))
        if pending is not None:  # terminated while it was being launched
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, pending)
        self._watcher.watch(popen.pid, functools.partial(self._node_ended, plan, node, popen.pid), popen)

    # ------------------------------------------------------------ exits

    def _node_ended(self, plan: LaunchPlan, node: NodePlan, pid: int) -> None:
        # Whatever the command left in its group (background children) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with self._lock:
            self._pids.pop((plan.job_uid, plan.attempt, node.rank), None)
        self._report(plan, node, self._read_exit(node))

    @staticmethod
    def _read_exit(node: NodePlan) -> tuple[ExitKind, int | None] | None:
        with contextlib.suppress(FileNotFoundError):
            parsed = parse_exit_file(Path(node.exit_file).read_text())
            if parsed is not None:
                return (ExitKind.EXITED if parsed[0] == "exit" else ExitKind.PREPARE_FAILED), parsed[1]
        return None

    def _report(self, plan: LaunchPlan, node: NodePlan, found: tuple[ExitKind, int | None] | None) -> None:
        kind, code = found if found is not None else (ExitKind.LOST, None)
        if self._listener is not None:
            self._listener(NodeExit(plan.job_uid, plan.attempt, node.rank, kind, code))

    # ------------------------------------------------------------ recovery

    def recover(self, plan: LaunchPlan) -> None:
        live = _wrapper_pids()
        for node in plan.nodes:
            finished = self._read_exit(node)
            if finished is not None:
                self._report(plan, node, finished)
                continue
            pid = live.get(node.exit_file)
            if pid is None:
                # Not running and no exit recorded (unless it ended just now). The launcher makes the
                # attempt dir just before spawning: without it the node surely never started.
                finished = self._read_exit(node)
                if finished is None:
                    started = os.path.exists(plan.attempt_dir)
                    finished = (ExitKind.LOST if started else ExitKind.NOT_STARTED, None)
                self._report(plan, node, finished)
                continue
            with self._lock:
                self._pids[(plan.job_uid, plan.attempt, node.rank)] = pid
            ended = functools.partial(self._node_ended, plan, node, pid)
            if not self._watcher.watch(pid, ended):
                ended()

    # ------------------------------------------------------------ signals

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with self._lock:
            self._signalled[(plan.job_uid, plan.attempt)] = sig
            pids = [self._pids.get((plan.job_uid, plan.attempt, node.rank)) for node in plan.nodes]
        for pid in pids:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)

    def forget(self, plan: LaunchPlan) -> None:
        """The plan's attempt has ended: drop what was kept for signalling it."""
        with self._lock:
            self._signalled.pop((plan.job_uid, plan.attempt), None)

    def close(self) -> None:
        self._launcher.shutdown(wait=True)
        self._watcher.close()


def _wrapper_pids() -> dict[str, int]:
    """Exit file -> pid of every wrapper alive on this machine, from one scan of /proc.

    The wrapper's subshells share its argv; the wrapper is the one that leads its session.
    """
    found = {}
    name = WRAPPER_NAME.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if len(argv) <= 4 or argv[3] != name:
                continue
            session = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if session == int(entry):
            found[argv[4].decode(errors="replace")] = int(entry)
    return found
