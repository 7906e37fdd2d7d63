"""The agent: one long-lived Ray actor per machine of a Ray cluster, which runs Corral's processes there.

It starts each process under the local backend's wrapper (:mod:`corral.backends.local.wrapper`: its own
session, stdout and stderr to node-local files, its exit code written to a node-local exit record), learns of
its end through the local backend's pidfd watcher, and keeps the ends in a numbered list that the server reads
with a long poll (:meth:`NodeAgent.ended`). Logs stay on the node; the server reads them by offset
(:meth:`NodeAgent.read`). Nothing here needs the server: a process outlives both the server and this actor, and
a new agent finds the wrappers alive again through ``/proc`` and their exit records on disk
(:meth:`NodeAgent.status`).

This module imports no Ray: :mod:`corral.backends.ray.cluster` makes the class an actor. Every method is
called from the server through Ray, on the actor's threads (it is a threaded actor); state is under one lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import corral
from corral.backends.local.accounts import Account, account, open_for_passage
from corral.backends.local.backend import lay_out, spawn_wrapper, wrapper_code
from corral.backends.local.environment import runtime_folder, server_environment
from corral.backends.local.reaper import RUN_VARIABLE, Reaper
from corral.backends.local.watcher import ExitWatcher
from corral.backends.local.wrapper import kill_session, read_exit, started, wrapper_pids
from corral.backends.ray.fence import AGENT_VARIABLE
from corral.backends.ray.rsh import SOCKET_VARIABLE

#: How many ends the agent keeps that the server has not yet acknowledged (beyond it, the oldest go: the
#: server re-reads ends from the exit records when it recovers).
MAX_KEPT_ENDS = 100_000
#: :meth:`NodeAgent.status` of a process whose wrapper left no trace.
NOT_STARTED = "not_started"
#: Largest piece of one file :meth:`NodeAgent.read` returns at a time.
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Start:
    """One wrapped process to start: where its exit record and logs go on this node, and what it runs."""

    exit_file: str
    workdir: str
    command: str
    stdout: str
    stderr: str
    env: dict[str, str]
    #: Its children may leave its process group (mpirun's): end them by session.
    sweep_session: bool = False


@dataclass(frozen=True)
class Setup:
    """What a node needs before its processes start: folders, files, the job's code."""

    dirs: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    #: (working directory, gzipped tar of the job's code) to unpack.
    code: tuple[tuple[str, bytes], ...] = ()
    #: The Unix account the processes run as, and the folders it must own (under ``within``).
    run_as: str | None = None
    owned_dirs: tuple[str, ...] = ()
    within: str = "/"


class NodeAgent:
    def __init__(self, version: str, node_base: str = "/var/lib/corral-node", namespace: str = "corral") -> None:
        if version != corral.__version__:
            raise RuntimeError(
                f"this machine runs corral {corral.__version__}, the server {version}: install the server's "
                f"version in the Python of every machine's Ray workers (pip install 'corral[ray]=={version}')"
            )
        #: In every process it starts: its fence ends them when this agent ends (:mod:`.fence`).
        self._id = uuid.uuid4().hex
        self._base_env = {**server_environment(), AGENT_VARIABLE: self._id}
        runtime_folder(Path(node_base, ".cache"))  # RayNodes.input_cache: corral.runtime for jobs on this machine
        self._fence = subprocess.Popen(
            [sys.executable, "-m", "corral.backends.ray.fence", str(os.getpid()), self._id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._watcher = ExitWatcher()
        self._reaper = Reaper()
        self._lock = threading.Condition()
        #: exit file -> pid of each wrapper alive that this agent watches.
        self._pids: dict[str, int] = {}
        #: run id -> a signal asked for all of its processes (those starting later get it at once).
        self._signalled: dict[str, signal.Signals] = {}
        #: Ends not yet acknowledged: (sequence number, exit file, exit code or None when none was recorded).
        self._ends: list[tuple[int, str, int | None]] = []
        self._next = 0
        self._execs: dict[int, _Exec] = {}
        self._base = node_base
        self._namespace = namespace
        #: Where ``mpirun``'s remote shell on this machine asks for commands on others (:mod:`.rsh`).
        self._socket = str(Path(node_base, "agent.sock"))
        threading.Thread(target=self._serve_rsh, name="corral-agent-rsh", daemon=True).start()

    def hello(self) -> dict[str, object]:
        return {
            "version": corral.__version__, "pid": os.getpid(), "fence": self._fence.pid, "agent_id": self._id,
            "hostname": socket.gethostname(),
        }  # fmt: skip

    # ------------------------------------------------------------ start

    def setup(self, setup: Setup) -> None:
        """Make the folders and files, unpack the code, give the account what it owns."""
        owner = account(setup.run_as) if setup.run_as else None
        within, dirs, owned = Path(setup.within), setup.dirs, setup.owned_dirs
        lay_out(owner, within=within, dirs=dirs, files=setup.files, code=setup.code, owned=owned)

    def start(self, run: str, starts: list[Start], run_as: str | None = None, ip: str = "") -> None:
        """Start each process; ``ip`` is the machine's address that its peers reach it at."""
        owner = account(run_as) if run_as else None
        network = {**network_environment(ip), SOCKET_VARIABLE: self._socket}
        for item in starts:
            os.makedirs(os.path.dirname(item.exit_file), exist_ok=True)
            self._spawn(run, item, owner, network)

    def _spawn(self, run: str, item: Start, owner: Account | None, network: dict[str, str]) -> None:
        own = owner.environment(item.workdir) if owner else {}
        env = {**self._base_env, **network, **own, **item.env, RUN_VARIABLE: run}
        unniced()
        popen = spawn_wrapper(owner, env, item.exit_file, item.workdir, item.command, item.stdout, item.stderr)
        with self._lock:
            self._pids[item.exit_file] = popen.pid
            pending = self._signalled.get(run)
        if pending is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, pending)
        ended = functools.partial(self._ended, item.exit_file, popen.pid, item.sweep_session, run, popen)
        self._watcher.watch(popen.pid, ended, popen)

    def _ended(
        self, exit_file: str, pid: int, sweep: bool, run: str = "", popen: subprocess.Popen[bytes] | None = None
    ) -> None:
        if sweep:
            kill_session(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with self._lock:
            signalled = run in self._signalled
        code = wrapper_code(exit_file, popen, signalled)
        with self._lock:
            self._pids.pop(exit_file, None)
            self._ends.append((self._next, exit_file, code))
            self._next += 1
            del self._ends[:-MAX_KEPT_ENDS]
            self._lock.notify_all()

    # ------------------------------------------------------------ ends

    def ended(self, seen: str | None, after: int, timeout: float) -> tuple[str, list[tuple[int, str, int | None]]]:
        """This agent's id, and its ends numbered above ``after`` (waiting up to ``timeout`` seconds for one);
        those up to ``after`` are acknowledged and dropped. ``after`` counts only if ``seen`` is this agent's id:
        numbers start again with each agent (a machine's new agent, after the last one died)."""
        with self._lock:
            if seen == self._id:
                self._ends = [end for end in self._ends if end[0] > after]
            if not self._ends:
                self._lock.wait(timeout)
            return self._id, list(self._ends)

    def status(self, wrapped: list[tuple[str, str]]) -> dict[str, int | str | None]:
        """For each wrapped process (its exit file, and the log its wrapper opens as it starts the command): its
        code when recorded, ``"running"`` while its wrapper lives (it is watched from now on), ``"not_started"``
        when its wrapper left no trace (a server stopped before starting it), else None (it ended recording
        nothing)."""
        live = wrapper_pids()
        out: dict[str, int | str | None] = {}
        for exit_file, log in wrapped:
            if not started(exit_file, log, live):
                out[exit_file] = NOT_STARTED
                continue
            code = read_exit(exit_file)
            pid = live.get(exit_file)
            if code is not None or pid is None:
                out[exit_file] = code
                continue
            out[exit_file] = "running"
            with self._lock:
                watched = exit_file in self._pids
                self._pids[exit_file] = pid
            if not watched and not self._watcher.watch(pid, functools.partial(self._ended, exit_file, pid, True)):
                out[exit_file] = read_exit(exit_file)
        return out

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    # ------------------------------------------------------------ signals

    def signal(self, run: str, exit_files: list[str], kill: bool) -> None:
        sig = signal.SIGKILL if kill else signal.SIGTERM
        with self._lock:
            self._signalled[run] = sig
            pids = [self._pids[f] for f in exit_files if f in self._pids]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def forget(self, run: str) -> None:
        """The run has ended everywhere: end what it left behind on this node."""
        with self._lock:
            self._signalled.pop(run, None)
        self._reaper.ended(run)

    # ------------------------------------------------------------ files

    def read(self, requests: list[tuple[str, int]]) -> list[bytes]:
        """The bytes of each file from its offset (up to :data:`READ_CHUNK`); empty where there are none."""
        out = []
        for path, offset in requests:
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    out.append(f.read(READ_CHUNK))
            except OSError:
                out.append(b"")
        return out

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    def remove_matching(self, base: str, patterns: list[str]) -> None:
        for pattern in patterns:
            for path in Path(base).glob(pattern):
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------ commands (cluster node exec)

    def exec_start(self, argv: list[str], cwd: str, env: dict[str, str], run_as: str | None, within: str) -> int:
        owner = account(run_as) if run_as else None
        os.makedirs(cwd, exist_ok=True)
        if owner is not None:
            open_for_passage(cwd, within=Path(within))
        unniced()
        process = subprocess.Popen(
            owner.command(argv) if owner else argv,
            cwd=cwd,
            env={**self._base_env, **(owner.environment(cwd) if owner else {}), **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        made = _Exec(process)
        with self._lock:
            self._execs[process.pid] = made
        return process.pid

    def exec_read(self, pid: int, timeout: float) -> list[tuple[str, str]]:
        """What the command wrote since the last call (waiting up to ``timeout`` for something), ``("exit",
        code)`` last once it has ended."""
        with self._lock:
            made = self._execs.get(pid)
        if made is None:
            return [("exit", "-1")]
        lines = made.take(timeout)
        if lines and lines[-1][0] == "exit":
            with self._lock:
                self._execs.pop(pid, None)
        return lines

    def exec_kill(self, pid: int) -> None:
        with self._lock:
            made = self._execs.pop(pid, None)
        if made is not None and made.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(made.process.pid, signal.SIGKILL)

    # ------------------------------------------------------------ mpirun's remote shell

    def _serve_rsh(self) -> None:
        os.makedirs(self._base, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._socket)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self._socket)
        os.chmod(self._socket, 0o666)  # every job's account connects; it is known by its uid (SO_PEERCRED)
        server.listen(64)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=self._rsh, args=(conn,), name="corral-agent-rsh-call", daemon=True).start()

    def _rsh(self, conn: socket.socket) -> None:
        """Run one remote-shell request on the host it names, as the account of the process that asked."""
        import ray

        from corral.backends.ray.cluster import agent_name

        with conn, conn.makefile("rwb") as stream:
            pid: int | None = None
            remote: Any = None
            try:
                request = json.loads(stream.readline())
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                _pid, uid, _gid = struct.unpack("3i", creds)
                run_as = None if uid == 0 else pwd.getpwuid(uid).pw_name
                run = str(request.get("run") or "")
                env = {RUN_VARIABLE: run} if run else {}
                cwd = str(Path(self._base, "runs", run)) if run else self._base
                remote = ray.get_actor(agent_name(str(request["host"])), namespace=self._namespace)
                argv = ["/bin/sh", "-c", str(request["command"])]
                pid = ray.get(remote.exec_start.remote(argv, cwd, env, run_as, self._base))
                ended = False
                while not ended:
                    for kind, text in ray.get(remote.exec_read.remote(pid, 1.0)):
                        ended = kind == "exit"
                        stream.write(json.dumps([kind, text]).encode() + b"\n")
                    stream.flush()
            except Exception as exc:
                with contextlib.suppress(OSError):
                    stream.write(json.dumps(["stderr", f"corral rsh: {exc}"]).encode() + b"\n")
                    stream.write(json.dumps(["exit", "255"]).encode() + b"\n")
                    stream.flush()
                if remote is not None and pid is not None:  # the caller went away: so does its command
                    with contextlib.suppress(Exception):
                        remote.exec_kill.remote(pid)


def unniced() -> None:
    """Ray runs its workers (this agent among them) at a low priority (nice 15), and a process inherits it from
    the thread that starts it: put the calling thread back to 0 so that a job runs as it would from a shell."""
    with contextlib.suppress(PermissionError):  # not root: the jobs stay niced
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 0)


def network_environment(ip: str) -> dict[str, str]:
    """Where a machine has several interfaces, collective libraries pick one by the hostname, which may resolve
    to loopback: name the interface that holds the address the job's peers are given (a job's own ``env``
    still wins)."""
    found = interface_of(ip) if ip else None
    if found is None:
        return {}
    name, network = found
    return {
        "GLOO_SOCKET_IFNAME": name,
        "NCCL_SOCKET_IFNAME": name,
        # OpenMPI: daemons on the other machines start through their agents (no ssh), and talk over this network.
        "OMPI_MCA_plm_rsh_agent": f"{sys.executable} -E -m corral.backends.ray.rsh",  # not the job's PYTHONPATH
        "OMPI_MCA_plm_rsh_no_tree_spawn": "1",
        "OMPI_MCA_oob_tcp_if_include": network,
        "OMPI_MCA_btl_tcp_if_include": network,
    }


@functools.cache
def interface_of(ip: str) -> tuple[str, str] | None:
    """The network interface whose IPv4 address is ``ip``, and its network (``198.18.0.0/24``); None if none."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _index, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:  # SIOCGIFADDR, SIOCGIFNETMASK: bytes 20-24 of the ifreq they fill in
                address = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x891B, request)[20:24])
            except OSError:
                continue  # no IPv4 address
            if address == ip:
                return name, str(ipaddress.IPv4Network(f"{address}/{mask}", strict=False))
    finally:
        probe.close()
    return None


class _Exec:
    """A command's output as it comes, read by one thread per stream."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lines: list[tuple[str, str]] = []
        self._open = 2
        self._cond = threading.Condition()
        assert process.stdout is not None and process.stderr is not None
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._cond:
                self._lines.append((name, raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()
        code = None
        with self._cond:
            self._open -= 1
            last = self._open == 0
        if last:
            code = self.process.wait()
            with self._cond:
                self._lines.append(("exit", str(code)))
                self._cond.notify_all()

    def take(self, timeout: float) -> list[tuple[str, str]]:
        with self._cond:
            if not self._lines:
                self._cond.wait(timeout)
            taken, self._lines = self._lines, []
            return taken
