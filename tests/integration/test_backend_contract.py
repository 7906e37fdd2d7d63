"""One suite every backend passes (issue 11): the local backend with real processes, the fake one of
``tests/fakes``, and Ray's on separate hosts (network namespaces with private node disks, ``tests/ray_hosts.py``):
a test that reads or writes a node's files from here instead of through the backend fails there."""

from __future__ import annotations

import asyncio
import queue
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.backends.base import FEATURES, Executor, ExitKind, NodeAccess, NodeProvider, NodeRef, ProcessExit
from corral.backends.local.backend import LocalBackend, lay_out
from corral.backends.local.nodes import LocalNodes
from corral.backends.local.resources import machine_gpus
from corral.core.errors import InvalidSpec
from corral.core.spec_parsing import parse_spec
from corral.core.specs import ClusterSpec, JobSpec
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment
from corral.launch.planner import plan_launch
from tests.fakes.backend import FakeExecutor, FakeMachine, FakeNodes
from tests.ray_hosts import NODE_ROOT, RayHosts


@dataclass
class Kind:
    """A backend under test: ``executor()`` is a new one on the same machine (as after a server restart)."""

    name: str
    executor: Callable[[], Executor]
    nodes: NodeProvider
    access: NodeAccess
    gpus: int
    #: Node i's address.
    ips: tuple[str, ...] = ("127.0.0.1",) * 3


@pytest.fixture(params=["local", "fake", "ray"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> Kind:
    if request.param == "local":
        local = LocalNodes(tmp_path)
        return Kind("local", lambda: LocalBackend(code_dir=tmp_path / "code"), local, local, len(machine_gpus()))
    if request.param == "ray":
        from corral.backends.ray.cluster import RayCluster
        from corral.backends.ray.executor import RayExecutor
        from corral.backends.ray.nodes import RayNodes

        hosts: RayHosts = request.getfixturevalue("ray_hosts")
        cluster = RayCluster(hosts.address, node_base=NODE_ROOT)
        machines = RayNodes(cluster)

        def executor() -> Executor:
            return RayExecutor(cluster, code_dir=tmp_path / "code", home=tmp_path)

        return Kind("ray", executor, machines, machines, 0, hosts.ips)
    machine = FakeMachine(gpus=4)
    fake = FakeNodes(machine, tmp_path / "nodes")
    return Kind("fake", lambda: FakeExecutor(machine), fake, fake, machine.gpus)


class Listening:
    """An executor and the reports it gives."""

    def __init__(self, kind: Kind) -> None:
        self.executor = kind.executor()
        self.reports: queue.Queue[ProcessExit] = queue.Queue()
        self.executor.set_listener(self.reports.put)
        self.plans: list[LaunchPlan] = []

    def launch(self, plan: LaunchPlan) -> None:
        self.plans.append(plan)
        self.executor.launch(plan)

    def close(self) -> None:
        """As the control loop does once their attempts have ended: forget every plan, then stop."""
        for plan in self.plans:
            self.executor.forget(plan)
        self.executor.close()

    def take(self, count: int, timeout: float = 30.0) -> list[ProcessExit]:
        got = [self.reports.get(timeout=timeout) for _ in range(count)]
        return sorted(got, key=lambda r: r.rank)


@pytest.fixture
def listening(kind: Kind) -> Iterator[Listening]:
    made = Listening(kind)
    yield made
    made.close()


def plan(kind: Kind, tmp_path: Path, command: str, *, prepare: str | None = None, nodes: int = 2) -> LaunchPlan:
    data: dict[str, object] = {"cluster": "c", "node_count": nodes, "custom": {"command": command}}
    if prepare:
        data["prepare"] = {"command": prepare}
    uid = uuid.uuid4().hex
    ctx = JobContext("ws", "exp", "j", uid, 1, str(tmp_path / "jobs" / uid), parse_spec(JobSpec, data))
    assignments = [
        NodeAssignment(
            node_id=i, name=f"node-{i}", ip=kind.ips[i], root=kind.nodes.node_root(NodeRef("ws", "c", f"node-{i}"))
        )
        for i in range(nodes)
    ]
    return plan_launch(ctx, assignments)


def test_each_process_reports_its_end_once_and_writes_its_log(kind: Kind, listening: Listening, tmp_path: Path) -> None:
    p = plan(kind, tmp_path, "echo hi; exit 3")
    listening.launch(p)
    reports = listening.take(2)
    assert [(r.rank, r.kind, r.exit_code) for r in reports] == [(0, ExitKind.EXITED, 3), (1, ExitKind.EXITED, 3)]
    assert all(Path(process.stdout).read_text() == "hi\n" for process in p.processes)
    with pytest.raises(queue.Empty):
        listening.reports.get(timeout=0.5)  # once each
    listening.executor.forget(p)


def test_a_failed_prepare_starts_no_process(kind: Kind, listening: Listening, tmp_path: Path) -> None:
    p = plan(kind, tmp_path, "echo ran; exit 0", prepare="exit 5")
    listening.launch(p)
    reports = listening.take(2)
    assert {(r.kind, r.exit_code) for r in reports} == {(ExitKind.PREPARE_FAILED, 5)}
    assert reports[0].message is not None and "exit code 5" in reports[0].message
    assert not any(
        Path(process.stdout).exists() and "ran" in Path(process.stdout).read_text() for process in p.processes
    )


def test_a_signal_ends_what_runs(kind: Kind, listening: Listening, tmp_path: Path) -> None:
    p = plan(kind, tmp_path, "sleep 60")
    listening.launch(p)
    with pytest.raises(queue.Empty):
        listening.reports.get(timeout=0.5)  # running
    listening.executor.signal(p, kill=False)
    reports = listening.take(2)
    assert all(r.kind == ExitKind.EXITED and r.exit_code not in (None, 0) for r in reports)


def test_a_new_executor_recovers_what_the_last_one_launched(kind: Kind, tmp_path: Path) -> None:
    before = Listening(kind)
    running = plan(kind, tmp_path, "sleep 1; exit 4")
    never = plan(kind, tmp_path, "exit 0")
    before.launch(running)
    with pytest.raises(queue.Empty):
        before.reports.get(timeout=0.3)
    before.executor.close()  # the server stops; what it started goes on
    after = Listening(kind)
    try:
        after.executor.recover(running)
        after.executor.recover(never)
        reports = after.take(4)
        seen = {(r.job_uid, r.rank): (r.kind, r.exit_code) for r in reports}
        assert seen == {
            (running.job_uid, 0): (ExitKind.EXITED, 4), (running.job_uid, 1): (ExitKind.EXITED, 4),
            (never.job_uid, 0): (ExitKind.NOT_STARTED, None), (never.job_uid, 1): (ExitKind.NOT_STARTED, None),
        }  # fmt: skip
    finally:
        after.plans += [running, never]
        after.close()


def test_an_attempt_is_ended_without_its_plan(kind: Kind, tmp_path: Path) -> None:
    """A restarted server that cannot rebuild a running job's plan (its stored spec no longer loads) still ends
    its processes, knowing only the job, the attempt and its machines: a later recovery hears each end."""
    before = Listening(kind)
    running = plan(kind, tmp_path, "sleep 60")
    before.launch(running)
    with pytest.raises(queue.Empty):
        before.reports.get(timeout=0.5)  # running
    before.executor.close()  # the server stops; what it started goes on
    restarted = kind.executor()
    after = Listening(kind)
    try:
        restarted.end_unplanned(running.job_uid, running.attempt, [node.ip for node in running.nodes])
        after.executor.recover(running)
        reports = after.take(2)
        assert all(r.kind == ExitKind.LOST or (r.kind == ExitKind.EXITED and r.exit_code) for r in reports), reports
    finally:
        restarted.close()
        after.plans.append(running)
        after.close()


def test_a_launch_stopped_after_its_folders_is_not_started(
    kind: Kind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stopped after making a job's folders, before starting its first wrapper: nothing ran, so the
    restart says NotStarted (the job is requeued), not lost (its node made unusable) nor its prepare failed."""
    cut_short = [plan(kind, tmp_path, "exit 0"), plan(kind, tmp_path, "exit 0", prepare="true")]
    if kind.name == "fake":
        pytest.skip("the fake backend makes no folders: its launch is all or nothing")
    if kind.name == "local":  # its launch makes the job's folders on this machine, then starts its wrappers
        for made in cut_short:
            lay_out(None, within=tmp_path, dirs=(*made.shared_dirs, *(node.workdir for node in made.nodes)))
    else:  # Ray's makes them here and on each machine (through its agent), then starts the wrappers there
        from corral.backends.ray.executor import RayExecutor

        before = kind.executor()
        assert isinstance(before, RayExecutor)
        monkeypatch.setattr(before, "_start", lambda state, *, prepare: None)  # the server stops here
        for made in cut_short:
            before._launch_now(before._run(made))
        before.close()
    after = Listening(kind)
    try:
        for made in cut_short:
            after.executor.recover(made)
        seen = {(r.job_uid, r.rank): r.kind for r in after.take(4)}
        assert seen == {(made.job_uid, rank): ExitKind.NOT_STARTED for made in cut_short for rank in (0, 1)}
    finally:
        after.plans += cut_short
        after.close()


def test_nodes_get_gpus_no_other_node_holds(kind: Kind) -> None:
    assert kind.nodes.features <= FEATURES  # what it says it supports is what the server knows to ask
    one_gpu = ClusterSpec.model_validate({"name": "g", "node": {"gpus": 1}, "scale": {"nodes": 1}})
    with pytest.raises(InvalidSpec, match=r"node\.gpus"):
        kind.nodes.check(one_gpu, kind.gpus + 1)
    given = kind.nodes.new_nodes(one_gpu, kind.gpus + 1, held_gpus=set())
    assert len(given) == kind.gpus and len({g for n in given for g in n.gpus}) == kind.gpus
    assert kind.nodes.new_nodes(one_gpu, 1, held_gpus=set(range(64))) == []  # every GPU held: none now
    cpu_only = ClusterSpec.model_validate({"name": "c", "scale": {"nodes": 3}})
    given = kind.nodes.new_nodes(cpu_only, 3, held_gpus=set())
    assert [n.gpus for n in given] == [(), (), ()]
    if kind.name == "ray":  # one node per machine: a machine some node holds is not given again
        assert kind.nodes.new_nodes(cpu_only, 3, held_gpus=set(), held_ips=frozenset(kind.ips[:2])) == given[2:]


def test_a_command_runs_on_a_node_and_its_files_are_read(kind: Kind) -> None:
    node = NodeRef("ws", "c", "node-0", ip=kind.ips[0])

    def run(*argv: str) -> list[tuple[str, str]]:
        async def output() -> list[tuple[str, str]]:
            return [item async for item in await kind.access.run(node, list(argv))]

        return asyncio.run(output())

    assert run("echo", "hi") == [("stdout", "hi"), ("exit", "0")]
    assert kind.access.read_text(node, "no-such-file.txt") == ""
    if kind.name == "ray":  # the node's disk is its own: write there through the node
        assert run("sh", "-c", "echo set up > setup.txt")[-1] == ("exit", "0")
    else:
        Path(kind.nodes.node_root(node)).mkdir(parents=True, exist_ok=True)
        (Path(kind.nodes.node_root(node)) / "setup.txt").write_text("set up\n")
    assert kind.access.read_text(node, "setup.txt") == "set up\n"
    kind.nodes.remove_node_files("ws", "c")
    assert kind.access.read_text(node, "setup.txt") == ""
