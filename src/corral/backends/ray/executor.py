"""Run launch plans on the machines of a Ray cluster, through the agent on each (:mod:`.agent`).

What is on a node stays there: each process's exit record and its stdout and stderr are written to the
machine's own disk (``<node base>/runs/<job uid>.<attempt>/``), and the server copies the logs into the job's
``stdouterr/`` as they grow and to the end before it reports a process ended (:mod:`.logs`). Paths of a plan under the
node base (a setup's log, a job's working directory) are the node's already and are written there directly.
The job's other folders (``shared/``, ``checkpoints/``, outputs) must be on a file system every machine and the
server mount at the same path, as Batch AI's shared file systems were (docs/ray.md).

An attempt goes through the local backend's two phases: every node's prepare, then every process. The server
is the barrier between them: it starts the processes once every prepare has reported 0, marking
``<attempt dir>/started`` first so that a restart knows the phase. One thread reads the agents' ends (one long
poll per agent); an agent that died took its processes with it (:mod:`.fence`): they are ``LOST``.
Launches and recoveries run on a few launcher threads, as on the local backend, so the control loop never waits
for a machine.

It is past 450 lines because launching, reading the ends and recovering share one state, under one lock: each
run's wrapped processes, registered by machine and exit record as they start or are found again. Split apart,
each part would reach into the others' registrations.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from corral.backends.base import ExitKind, ExitListener, ProcessExit
from corral.backends.local.accounts import account
from corral.backends.local.backend import first_failure, lay_out, resumed_from
from corral.backends.local.reaper import run_id
from corral.backends.ray.agent import NOT_STARTED, Setup, Start
from corral.backends.ray.cluster import RayCluster, unwrap
from corral.backends.ray.logs import Log, LogCopier
from corral.launch.layout import METRICS_VARIABLE, STARTED_MARKER, prepare_exit, rank_exit
from corral.launch.plan import LaunchPlan, NodePlan

log = logging.getLogger(__name__)

#: How long one poll for ends waits on the agent.
POLL_SECONDS = 2.0
#: Tries at copying an ended process's logs to their end before its end is told.
LAST_COPY_TRIES = 3


@dataclass(frozen=True)
class _Item:
    """One wrapped process of a run on one machine: a prepare (``rank`` is the node's) or a job process."""

    ip: str
    prepare: bool
    rank: int
    #: On the machine: its exit record, and the log its wrapper opens as it starts the command.
    exit_file: str
    log: str
    #: The logs to copy; empty where the plan's log is on the machine already.
    logs: tuple[Log, ...]


@dataclass
class _Run:
    plan: LaunchPlan
    run: str
    #: By (machine ip, machine exit file), as the agents report their ends.
    items: dict[tuple[str, str], _Item] = field(default_factory=dict)
    #: Ranks (of processes) reported; node ranks of prepares ended.
    reported: set[int] = field(default_factory=set)
    prepared: set[int] = field(default_factory=set)
    prepare_failure: tuple[int, int | None] | None = None
    #: Node ranks whose machine was lost while they prepared.
    prepare_lost: set[int] = field(default_factory=set)


class RayExecutor:
    def __init__(self, cluster: RayCluster, *, code_dir: Path, home: Path, threads: int = 4) -> None:
        self._cluster = cluster
        self._base = cluster.node_base
        self._code_dir = code_dir
        self._home = home
        self._listener: ExitListener | None = None
        self._runs: dict[tuple[str, int], _Run] = {}
        #: (machine ip, machine exit file) -> its run.
        self._by_exit: dict[tuple[str, str], _Run] = {}
        self._lock = threading.RLock()
        self._launcher = ThreadPoolExecutor(threads, thread_name_prefix="corral-ray-launcher")
        self._closed = threading.Event()
        #: Set when a run is registered: the ends thread polls its machines (it may have had none to poll).
        self._new_machine = threading.Event()
        self._ends = threading.Thread(target=self._poll_ends, name="corral-ray-ends", daemon=True)
        self._ends.start()
        self._logs = LogCopier(cluster, self._running_logs)

    def set_listener(self, listener: ExitListener) -> None:
        self._listener = listener

    # ------------------------------------------------------------ paths

    def _on_node(self, path: str) -> bool:
        return PurePath(path).is_relative_to(self._base)

    def _runs_dir(self, run: str) -> str:
        return str(PurePath(self._base, "runs", run))

    def _items(self, state: _Run, node: NodePlan, *, prepare: bool) -> list[tuple[_Item, Start]]:
        plan, runs_dir = state.plan, self._runs_dir(state.run)

        def local(path: str) -> str:
            return path if self._on_node(path) else str(PurePath(runs_dir, PurePath(path).name))

        def logs(*paths: str) -> tuple[tuple[str, str], ...]:
            return tuple((local(p), p) for p in dict.fromkeys(paths) if not self._on_node(p))

        if prepare:
            assert node.prepare_command is not None
            exit_file = str(PurePath(runs_dir, PurePath(prepare_exit(plan.attempt_dir, node.rank)).name))
            env = node.prepare_env
            extra = (node.environment_log,) if node.environment_log else ()
            if node.environment_log:  # written on the machine, brought back like the prepare's log
                env = {**env, "CORRAL_ENVIRONMENT_LOG": local(node.environment_log)}
            item = _Item(node.ip, True, node.rank, exit_file, local(node.prepare_log), logs(node.prepare_log, *extra))
            start = Start(
                exit_file, node.workdir, node.prepare_command, local(node.prepare_log), local(node.prepare_log), env,
            )  # fmt: skip
            return [(item, start)]
        made = []
        resumed = resumed_from(plan)
        for process in node.processes:
            exit_file = str(PurePath(runs_dir, PurePath(rank_exit(plan.attempt_dir, process.rank)).name))
            env = dict(process.env)
            metrics = env.get(METRICS_VARIABLE)
            if metrics:  # written on the machine, brought back like the logs (the server reads them there)
                env[METRICS_VARIABLE] = local(metrics)
            if resumed is not None:
                env["CORRAL_RESUMED_FROM"] = resumed
            extra = (metrics,) if metrics else ()
            copied = logs(process.stdout, process.stderr, *extra)
            item = _Item(node.ip, False, process.rank, exit_file, local(process.stdout), copied)
            start = Start(
                exit_file, node.workdir, process.command, local(process.stdout), local(process.stderr), env,
                process.sweep_session,
            )  # fmt: skip
            made.append((item, start))
        return made

    def _register(self, state: _Run, items: list[_Item]) -> None:
        with self._lock:
            for item in items:
                state.items[item.ip, item.exit_file] = item
                self._by_exit[item.ip, item.exit_file] = state
        self._new_machine.set()

    def _unregister(self, state: _Run, items: list[_Item]) -> None:
        with self._lock:
            for item in items:
                state.items.pop((item.ip, item.exit_file), None)
                self._by_exit.pop((item.ip, item.exit_file), None)

    def _run(self, plan: LaunchPlan) -> _Run:
        with self._lock:
            key = (plan.job_uid, plan.attempt)
            state = self._runs.get(key)
            if state is None:
                state = self._runs[key] = _Run(plan, run_id(plan.job_uid, plan.attempt))
            return state

    # ------------------------------------------------------------ launch

    def launch(self, plan: LaunchPlan) -> None:
        self._launcher.submit(self._launch_now, self._run(plan))

    def _launch_now(self, state: _Run) -> None:
        import ray

        plan = state.plan
        try:
            lay_out(  # the job's folders and files on the server's disk
                account(plan.run_as) if plan.run_as else None,
                within=self._home,
                dirs=[d for d in plan.shared_dirs if not self._on_node(d)],
                files=[(path, content) for path, content in plan.files if not self._on_node(path)],
                owned=tuple(d for d in plan.owned_dirs if not self._on_node(d)),
            )
            archives: dict[str, bytes] = {}
            calls = []
            for node in plan.nodes:
                code: tuple[tuple[str, bytes], ...] = ()
                if node.code_archive:
                    if node.code_archive not in archives:
                        archives[node.code_archive] = (self._code_dir / f"{node.code_archive}.tar.gz").read_bytes()
                    code = ((node.workdir, archives[node.code_archive]),)
                # The node's own folders: its working directory, the run's records, a setup's folder.
                mine = (node.workdir, self._runs_dir(state.run), *(d for d in plan.shared_dirs if self._on_node(d)))
                setup = Setup(
                    dirs=mine,
                    files=plan.files,
                    code=code,
                    run_as=plan.run_as,
                    owned_dirs=mine,  # the job's account writes all of them (ignored without one)
                    within=self._base,
                )
                calls.append(self._cluster.agent(node.ip).setup.remote(setup))
            ray.get(calls)
            self._start(state, prepare=plan.has_prepare)
        except Exception as exc:
            self._launch_failed(state, exc)

    def _start(self, state: _Run, *, prepare: bool) -> None:
        import ray

        plan = state.plan
        if not prepare and plan.has_prepare:
            Path(plan.attempt_dir, STARTED_MARKER).touch()
        calls = []
        for node in plan.nodes:
            if prepare and not node.prepare_command:
                continue
            pairs = self._items(state, node, prepare=prepare)
            self._register(state, [item for item, _ in pairs])
            calls.append(
                self._cluster.agent(node.ip).start.remote(state.run, [s for _, s in pairs], plan.run_as, node.ip)
            )
        ray.get(calls)

    def _launch_failed(self, state: _Run, exc: Exception) -> None:
        log.exception("launch of job %s on Ray failed", state.plan.job_uid)
        self.signal(state.plan, kill=True)
        raised = unwrap(exc)  # what an agent raised, not Ray's wrapping of it
        message = f"{type(raised).__name__}: {raised}"
        for process in state.plan.processes:
            self._emit(state, process.rank, ExitKind.LAUNCH_FAILED, None, message)

    def _start_processes_or_fail(self, state: _Run) -> None:
        try:
            self._start(state, prepare=False)
        except Exception as exc:
            self._launch_failed(state, exc)

    # ------------------------------------------------------------ ends

    def _poll_ends(self) -> None:
        import ray

        #: Per machine: (its agent's id, the last end read from it).
        cursors: dict[str, tuple[str | None, int]] = {}
        pending: dict[Any, str] = {}
        #: Every machine a run used: its poll goes on between runs, so that a new run's ends come at once.
        polled: set[str] = set()
        while not self._closed.is_set():
            with self._lock:
                polled |= {item.ip for state in self._runs.values() for item in state.items.values()}
                self._new_machine.clear()
            for ip in polled - set(pending.values()):
                try:
                    seen, after = cursors.get(ip, (None, -1))
                    pending[self._cluster.agent(ip).ended.remote(seen, after, POLL_SECONDS)] = ip
                except Exception as exc:  # no such machine alive now
                    polled.discard(ip)
                    self._machine_lost(ip, str(exc))
            if not pending:
                self._new_machine.wait(0.5)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.1)
            for ref in ready:
                ip = pending.pop(ref)
                try:
                    agent, ends = ray.get(ref)
                except Exception as exc:
                    if self._poll_failed(ip, exc):
                        polled.discard(ip)
                    continue
                before, last = cursors.get(ip, (None, -1))
                cursors[ip] = (agent, max((end[0] for end in ends), default=last if agent == before else -1))
                for _seq, exit_file, code in ends:
                    self._ended(ip, exit_file, code)

    def _poll_failed(self, ip: str, exc: Exception) -> bool:
        """A dead agent took its processes with it (its fence ended them): they are lost (True). One that is only
        out of reach for now is polled again, unless Ray has given its machine up."""
        from ray.exceptions import ActorDiedError

        if isinstance(exc, ActorDiedError) or ip not in self._cluster.alive_ips():
            self._cluster.drop_agent(ip)
            self._machine_lost(ip, type(exc).__name__)
            return True
        log.warning("the agent at %s did not answer (%s): asking again", ip, exc)
        self._closed.wait(0.5)
        return False

    def _machine_lost(self, ip: str, why: str) -> None:
        with self._lock:
            lost = [(state, item) for state in self._runs.values() for item in state.items.values() if item.ip == ip]
        if lost:
            log.warning("the machine at %s is gone (%s): %d processes lost", ip, why, len(lost))
        for state, item in lost:
            self._item_ended(state, item, None, lost=True)

    def _ended(self, ip: str, exit_file: str, code: int | None) -> None:
        with self._lock:
            state = self._by_exit.get((ip, exit_file))
            item = state.items.get((ip, exit_file)) if state else None
        if state is None or item is None:
            return  # a run this server does not watch (forgotten, or not yet recovered)
        self._item_ended(state, item, code)

    def _item_ended(self, state: _Run, item: _Item, code: int | None, *, lost: bool = False) -> None:
        """``lost``: its machine is gone (nothing more to read there)."""
        with self._lock:
            if state.items.pop((item.ip, item.exit_file), None) is None:
                return  # reported already
            self._by_exit.pop((item.ip, item.exit_file), None)
        if not lost:
            self._copy_last(item)
        if item.prepare:
            self._prepare_ended(state, item.rank, code, lost=lost)
            return
        if code is None:
            self._emit(state, item.rank, ExitKind.LOST, None, None)
            return
        self._emit(state, item.rank, ExitKind.EXITED, code, first_failure(state.plan) if code else None)

    def _copy_last(self, item: _Item) -> None:
        """Copy an ended process's logs to their end before its end is told (a job's logs are whole once it has
        ended); asked again a few times: once its end is told, nothing copies them any more."""
        for attempt in range(LAST_COPY_TRIES):
            try:
                self._logs.copy(item.ip, item.logs)
                return
            except Exception as exc:
                if attempt == LAST_COPY_TRIES - 1:
                    log.warning("the logs of %s on %s were not copied whole: %s", item.exit_file, item.ip, exc)
                else:
                    self._closed.wait(0.2)

    def _prepare_ended(self, state: _Run, node_rank: int, code: int | None, *, lost: bool = False) -> None:
        plan = state.plan
        with self._lock:
            state.prepared.add(node_rank)
            if lost:
                state.prepare_lost.add(node_rank)
            first = code != 0 and state.prepare_failure is None
            if first:
                state.prepare_failure = (node_rank, code)
            remaining = any(n.prepare_command and n.rank not in state.prepared for n in plan.nodes)
            failure = state.prepare_failure
        if first:
            self.signal(plan, kill=False)  # no process starts now: the others need not finish preparing
        if remaining:
            return
        if failure is None:
            self._launcher.submit(self._start_processes_or_fail, state)
            return
        if state.prepare_lost:  # a machine went while preparing: its node is lost, the others never started
            for process in plan.processes:
                kind = ExitKind.LOST if process.node_rank in state.prepare_lost else ExitKind.NOT_STARTED
                self._emit(state, process.rank, kind, None, None)
            return
        rank, failed_code = failure
        name = plan.nodes[rank].node_name
        if failed_code is None:
            message = f"prepare.command on node {rank} ({name}) vanished without an exit code"
        else:
            message = f"prepare.command failed on node {rank} ({name}) with exit code {failed_code}"
        for process in plan.processes:
            self._emit(state, process.rank, ExitKind.PREPARE_FAILED, failed_code, message)

    def _emit(self, state: _Run, rank: int, kind: ExitKind, code: int | None, message: str | None) -> None:
        with self._lock:
            if rank in state.reported:
                return
            state.reported.add(rank)
        if self._listener is not None:
            self._listener(ProcessExit(state.plan.job_uid, state.plan.attempt, rank, kind, code, message))

    def _running_logs(self) -> dict[str, list[Log]]:
        with self._lock:
            wanted: dict[str, list[Log]] = {}
            for state in self._runs.values():
                for item in state.items.values():
                    wanted.setdefault(item.ip, []).extend(item.logs)
            return wanted

    # ------------------------------------------------------------ recovery

    def recover(self, plan: LaunchPlan) -> None:
        self._launcher.submit(self._recover_now, self._run(plan))

    def _recover_now(self, state: _Run) -> None:
        """Ask each machine what became of the run's wrappers. One that left no trace (the server stopped after
        making the run's folders, before starting it) is NotStarted, as in the local backend: the job is
        requeued, not its node taken out of use as lost. So is every process when none of the prepares started."""
        import ray

        plan = state.plan
        try:
            if not self._exists(plan, plan.attempt_dir):  # stopped before the launch made anything
                for process in plan.processes:
                    self._emit(state, process.rank, ExitKind.NOT_STARTED, None, None)
                return
            prepare = plan.has_prepare and not self._exists(plan, str(PurePath(plan.attempt_dir, STARTED_MARKER)))
            by_node: list[tuple[NodePlan, list[_Item]]] = []
            for node in plan.nodes:
                if prepare and not node.prepare_command:
                    continue
                items = [item for item, _ in self._items(state, node, prepare=prepare)]
                self._register(state, items)  # first: an end the poll reads from now on is this run's
                by_node.append((node, items))
            found: list[tuple[_Item, int | str | None]] = []
            for node, items in by_node:
                try:
                    status = self._cluster.agent(node.ip).status.remote([(i.exit_file, i.log) for i in items])
                    codes = ray.get(status)
                except Exception as exc:
                    self._machine_lost(node.ip, str(exc))
                    continue
                found += [(item, codes.get(item.exit_file)) for item in items]
            never = [item for item, code in found if code == NOT_STARTED]
            self._unregister(state, never)
            if prepare and never and len(never) == sum(len(items) for _, items in by_node):
                for process in plan.processes:
                    self._emit(state, process.rank, ExitKind.NOT_STARTED, None, None)
                return
            for item, code in found:
                if code == NOT_STARTED and not item.prepare:
                    self._emit(state, item.rank, ExitKind.NOT_STARTED, None, None)
                elif code == NOT_STARTED:  # a prepare that never started while others did: it failed
                    self._prepare_ended(state, item.rank, None)
                elif code != "running":
                    self._item_ended(state, item, code if isinstance(code, int) else None)
        except Exception as exc:
            self._launch_failed(state, exc)

    def _exists(self, plan: LaunchPlan, path: str) -> bool:
        import ray

        if not self._on_node(path):
            return os.path.exists(path)
        return bool(ray.get(self._cluster.agent(plan.nodes[0].ip).exists.remote(path)))

    # ------------------------------------------------------------ signals

    def signal(self, plan: LaunchPlan, *, kill: bool) -> None:
        """Signal what runs on every machine of the plan; each agent also keeps the signal for the run's
        processes it has yet to start."""
        state = self._run(plan)
        with self._lock:
            running = [(ip, exit_file) for ip, exit_file in state.items]
        for ip in dict.fromkeys(node.ip for node in plan.nodes):
            self._tell(ip, "signal", state.run, [f for at, f in running if at == ip], kill)

    def forget(self, plan: LaunchPlan) -> None:
        with self._lock:
            state = self._runs.pop((plan.job_uid, plan.attempt), None)
            if state is not None:
                for item in state.items.values():
                    self._by_exit.pop((item.ip, item.exit_file), None)
        run = run_id(plan.job_uid, plan.attempt)
        for ip in {node.ip for node in plan.nodes}:
            self._tell(ip, "forget", run)

    def end_unplanned(self, job_uid: str, attempt: int, ips: Collection[str]) -> None:
        run = run_id(job_uid, attempt)
        for ip in dict.fromkeys(ips):
            self._tell(ip, "forget", run)  # the agent's reaper ends what carries the run's id

    def _tell(self, ip: str, method: str, *args: Any) -> None:
        """Call an agent without waiting for it; a machine that is gone is no error here (its ends say so), and
        one Corral has let go of meanwhile has no agent to tell (none is started there)."""
        try:
            getattr(self._cluster.agent(ip, start=False), method).remote(*args)
        except Exception:
            log.debug("calling %s on the agent at %s failed", method, ip, exc_info=True)

    def close(self) -> None:
        self._closed.set()
        self._launcher.shutdown(wait=True)
        self._logs.close()
        self._ends.join(timeout=5)
