"""A fake backend: the three interfaces of ``corral.backends.base`` over a simulated machine, no processes.

Commands are a tiny language the local backend's ``sh`` runs the same way: ``;``-separated ``echo TEXT`` (a line
on stdout), ``sleep SECONDS`` and ``exit CODE``. The :class:`FakeMachine` outlives an executor, as real processes
outlive a server: a new :class:`FakeExecutor` on the same machine recovers what the old one launched. The backend
contract tests (``tests/integration/test_backend_contract.py``) hold it and the local backend to one suite.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path

from corral.backends.base import ExitKind, ExitListener, NewNode, NodeRef, ProcessExit
from corral.core.errors import InvalidRequest, InvalidSpec
from corral.core.specs import ClusterSpec
from corral.launch.plan import LaunchPlan, ProcessPlan


@dataclass
class Script:
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    code: int = 0


def parse(command: str) -> Script:
    script = Script()
    for part in filter(None, (p.strip() for p in command.split(";"))):
        word, _, rest = part.partition(" ")
        if word == "echo":
            script.lines.append(rest)
        elif word == "sleep":
            script.seconds += float(rest)
        elif word == "exit":
            script.code = int(rest)
            break
        else:
            raise ValueError(f"the fake backend runs echo, sleep and exit, not {part!r}")
    return script


@dataclass
class FakeProcess:
    ends_at: float
    code: int
    #: Set when it ended (by itself or by a signal).
    ended: int | None = None


@dataclass
class FakeMachine:
    """What outlives a server: the attempts launched and their processes."""

    gpus: int = 4
    launched: set[tuple[str, int]] = field(default_factory=set)
    processes: dict[tuple[str, int, int], FakeProcess] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, key: tuple[str, int, int]) -> int | None:
        """The process's exit code once it has ended, else None."""
        with self.lock:
            proc = self.processes[key]
            if proc.ended is None and time.monotonic() >= proc.ends_at:
                proc.ended = proc.code
            return proc.ended


class FakeExecutor:
    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine
        self._listener: ExitListener | None = None
        self._timers: list[threading.Timer] = []
        self._reported: set[tuple[str, int, int]] = set()
        self._lock = threading.Lock()

    def set_listener(self, listener: ExitListener) -> None:
        self._listener = listener

    def _emit(self, plan: LaunchPlan, rank: int, kind: ExitKind, code: int | None, message: str | None = None) -> None:
        key = (plan.job_uid, plan.attempt, rank)
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        if self._listener is not None:
            self._listener(ProcessExit(plan.job_uid, plan.attempt, rank, kind, code, message))

    def _watch(self, plan: LaunchPlan, process: ProcessPlan) -> None:
        key = (plan.job_uid, plan.attempt, process.rank)

        def check() -> None:
            code = self.machine.state(key)
            if code is not None:
                self._emit(plan, process.rank, ExitKind.EXITED, code)

        with self.machine.lock:
            delay = max(0.0, self.machine.processes[key].ends_at - time.monotonic())
        timer = threading.Timer(delay, check)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def launch(self, plan: LaunchPlan) -> None:
        for path in plan.shared_dirs:
            Path(path).mkdir(parents=True, exist_ok=True)
        with self.machine.lock:
            self.machine.launched.add((plan.job_uid, plan.attempt))
        for node in plan.nodes:
            if node.prepare_command and (prepared := parse(node.prepare_command)).code != 0:
                message = (
                    f"prepare.command failed on node {node.rank} ({node.node_name}) with exit code {prepared.code}"
                )
                for process in plan.processes:
                    self._emit(plan, process.rank, ExitKind.PREPARE_FAILED, prepared.code, message)
                return
        now = time.monotonic()
        for process in plan.processes:
            script = parse(process.command)
            Path(process.stdout).parent.mkdir(parents=True, exist_ok=True)
            with open(process.stdout, "a") as out:
                out.writelines(f"{line}\n" for line in script.lines)
            with self.machine.lock:
                self.machine.processes[(plan.job_uid, plan.attempt, process.rank)] = FakeProcess(
                    now + script.seconds, script.code
                )
            self._watch(plan, process)

    def recover(self, plan: LaunchPlan) -> None:
        with self.machine.lock:
            launched = (plan.job_uid, plan.attempt) in self.machine.launched
        for process in plan.processes:
            if not launched:
                self._emit(plan, process.rank, ExitKind.NOT_STARTED, None)
            else:
                self._watch(plan, process)

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        for process in plan.processes:
            key = (plan.job_uid, plan.attempt, process.rank)
            with self.machine.lock:
                proc = self.machine.processes.get(key)
                if proc is None or proc.ended is not None or time.monotonic() >= proc.ends_at:
                    continue
                proc.ended = 137 if kill else 143
            self._emit(plan, process.rank, ExitKind.EXITED, proc.ended)

    def forget(self, plan: LaunchPlan) -> None:
        with self._lock:
            self._reported -= {k for k in self._reported if k[:2] == (plan.job_uid, plan.attempt)}

    def end_unplanned(self, job_uid: str, attempt: int, ips: Collection[str]) -> None:
        with self.machine.lock:
            for key, proc in self.machine.processes.items():
                if key[:2] == (job_uid, attempt) and proc.ended is None:
                    proc.ended, proc.ends_at = 137, time.monotonic()  # SIGKILLed now

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()


class FakeNodes:
    """Nodes of a simulated machine with ``machine.gpus`` GPUs, their files under ``root``."""

    backend = "fake"
    features = frozenset({"gpus"})

    def __init__(self, machine: FakeMachine, root: Path) -> None:
        self.machine = machine
        self.root = root

    def check(self, spec: ClusterSpec, count: int) -> list[str]:
        if spec.node.gpus * count > self.machine.gpus:
            raise InvalidSpec(
                f"node.gpus: {count} nodes x {spec.node.gpus} GPUs, the fake machine has {self.machine.gpus}"
            )
        return []

    def new_nodes(
        self, spec: ClusterSpec, count: int, *, held_gpus: set[int], held_ips: frozenset[str] = frozenset()
    ) -> list[NewNode]:
        free = [g for g in range(self.machine.gpus) if g not in held_gpus]
        per = spec.node.gpus
        possible = count if per == 0 else min(count, len(free) // per)
        return [NewNode(ip=f"198.18.0.{10 + i}", gpus=tuple(free[i * per : (i + 1) * per])) for i in range(possible)]

    def input_cache(self) -> tuple[str, int]:
        return str(self.root / ".cache"), 2**30

    def node_root(self, node: NodeRef) -> str:
        return str(self.root / node.workspace / node.cluster / node.name)

    def remove_node_files(self, workspace: str, cluster: str, node: str | None = None) -> None:
        shutil.rmtree(self.root / workspace / cluster / (node or ""), ignore_errors=True)

    def hold(self, ips: frozenset[str], wanted: int) -> None:
        pass  # nodes are made here: nobody else to tell

    def machines(self) -> frozenset[str] | None:
        return None  # this machine's slices: they come and go with Corral alone

    def remove_job_files(self, job_uid: str) -> None:
        for job_dir in self.root.glob(f"*/*/*/jobs/{job_uid}"):
            shutil.rmtree(job_dir, ignore_errors=True)

    def read_text(self, node: NodeRef, relative: str) -> str:
        try:
            return (Path(self.node_root(node)) / relative).read_text()
        except FileNotFoundError:
            return ""

    async def run(self, node: NodeRef, argv: list[str], *, run_as: str | None = None) -> AsyncIterator[tuple[str, str]]:
        try:
            script = parse(" ".join(argv))
        except ValueError as exc:
            raise InvalidRequest(f"command: {exc}") from None
        return _lines(script)


async def _lines(script: Script) -> AsyncIterator[tuple[str, str]]:
    for line in script.lines:
        yield "stdout", line
    yield "exit", str(script.code)
