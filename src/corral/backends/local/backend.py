"""Run launch plans as process groups on this machine.

Each node of a job runs the wrapper (``wrapper.py``) in a new session, so the
node's whole process tree is one process group: ``killpg`` reaches all of it
and nothing is left behind. Exits are reported through ``ExitWatcher``; the
exit code is the one the wrapper wrote to disk, so it survives a server crash.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import tarfile
import threading
from pathlib import Path

from corral.backends.base import ExitKind, ExitListener, NodeExit
from corral.backends.local.watcher import ExitWatcher
from corral.backends.local.wrapper import WRAPPER_NAME, WRAPPER_SCRIPT, parse_exit_file
from corral.launch.plan import LaunchPlan, NodePlan

log = logging.getLogger(__name__)


class LocalBackend:
    def __init__(self, *, code_dir: Path, base_env: dict[str, str] | None = None) -> None:
        self._code_dir = code_dir
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._listener: ExitListener | None = None
        self._watcher = ExitWatcher()
        #: (job uid, attempt, rank) -> wrapper pid, while it runs.
        self._pids: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()

    def set_listener(self, listener: ExitListener) -> None:
        self._listener = listener

    # ------------------------------------------------------------ launch

    def launch(self, plan: LaunchPlan) -> None:
        for node in plan.nodes:
            self._launch_node(plan, node)

    def _launch_node(self, plan: LaunchPlan, node: NodePlan) -> None:
        key = (plan.job_uid, plan.attempt, node.rank)
        if node.code_archive:
            self._unpack_code(node.code_archive, Path(node.workdir))
        process = node.processes[0]
        argv = [
            "/bin/sh",
            "-c",
            WRAPPER_SCRIPT,
            WRAPPER_NAME,
            node.control_dir,
            node.workdir,
            process.command,
            node.prepare_command or "",
            process.stdout,
            process.stderr,
            node.prepare_log,
            node.job_temp,
            *plan.shared_dirs,
        ]
        env = {**self._base_env, **process.env}
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self._lock:
            self._pids[key] = popen.pid
        self._watcher.watch(popen.pid, functools.partial(self._node_ended, plan, node, popen.pid), popen)

    def _unpack_code(self, archive: str, dest: Path) -> None:
        with tarfile.open(self._code_dir / f"{archive}.tar.gz") as tar:
            tar.extractall(dest, filter="data")

    # ------------------------------------------------------------ exits

    def _node_ended(self, plan: LaunchPlan, node: NodePlan, pid: int) -> None:
        # Whatever the command left in its group (background children) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with self._lock:
            self._pids.pop((plan.job_uid, plan.attempt, node.rank), None)
        self._report(plan, node, self._read_exit(node))

    def _read_exit(self, node: NodePlan) -> NodeExit | None:
        with contextlib.suppress(FileNotFoundError):
            parsed = parse_exit_file(Path(node.exit_file).read_text())
            if parsed is not None:
                kind = ExitKind.EXITED if parsed[0] == "exit" else ExitKind.PREPARE_FAILED
                return NodeExit("", 0, node.rank, kind, parsed[1])
        return None

    def _report(self, plan: LaunchPlan, node: NodePlan, found: NodeExit | None) -> None:
        if found is None:
            found = NodeExit("", 0, node.rank, ExitKind.LOST)
        event = NodeExit(plan.job_uid, plan.attempt, node.rank, found.kind, found.exit_code)
        if self._listener is not None:
            self._listener(event)

    # ------------------------------------------------------------ recovery

    def recover(self, plan: LaunchPlan) -> None:
        for node in plan.nodes:
            finished = self._read_exit(node)
            if finished is not None:
                self._report(plan, node, finished)
                continue
            pid = self._live_pid(node)
            if pid is None:
                finished = self._read_exit(node)  # it may have ended while we looked
                if finished is None and not os.path.exists(node.pid_file):
                    finished = NodeExit("", 0, node.rank, ExitKind.NOT_STARTED)
                self._report(plan, node, finished)
                continue
            with self._lock:
                self._pids[(plan.job_uid, plan.attempt, node.rank)] = pid
            ended = functools.partial(self._node_ended, plan, node, pid)
            if not self._watcher.watch(pid, ended):
                ended()

    @staticmethod
    def _live_pid(node: NodePlan) -> int | None:
        """The wrapper's pid if that process is alive and still ours (pids get reused).

        Without a pid file the wrapper may have been started just before the last
        server died, and not yet written it: look for it among all processes.
        """
        try:
            candidates = [int(Path(node.pid_file).read_text().strip())]
        except (OSError, ValueError):
            candidates = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        for pid in candidates:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(cmdline) > 4 and cmdline[3] == WRAPPER_NAME.encode() and cmdline[4] == node.control_dir.encode():
                return pid
        return None

    # ------------------------------------------------------------ signals

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        sig = signal.SIGKILL if kill else signal.SIGTERM
        for node in plan.nodes:
            with self._lock:
                pid = self._pids.get((plan.job_uid, plan.attempt, node.rank))
            if pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)

    def close(self) -> None:
        self._watcher.close()
