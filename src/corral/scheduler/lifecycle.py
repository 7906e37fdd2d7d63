"""Nodes through their lives, as the control loop sees them, pass by pass.

Nomenclature: a node *joins* (``preparing`` while the cluster's ``setup.command``
runs, then ``idle``, or ``unusable`` when the setup fails), *works* (``idle`` ⇄
``running``), and *leaves*: removed by a resize or an automatic shrink (idle nodes
at once; a busy one is ``leaving`` until its job is dealt with as the cluster's
``deallocation`` says), or evicted (``corral cluster node preempt`` on a
low-priority cluster). Automatic clusters get a new target each pass from their
queue. A pass returns what must happen to running jobs (:class:`NodeActions`); the
control loop does it, since only the loop stops runs.

Setups are one-process launch plans (``scheduler/setup.py``) run by the backend
like jobs: their reports come through the loop, which hands them here.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.backends.base import Backends, ExitKind, NodeRef, ProcessExit
from corral.core.errors import UnloadableSpec
from corral.core.specs import ScaleSpec, SetupSpec
from corral.core.states import AttemptReason, NodeState
from corral.launch.plan import LaunchPlan
from corral.scheduler.nodes import reconcile
from corral.scheduler.setup import setup_plan, setup_uid
from corral.store.tables import ClusterRow, NodeRow, WorkspaceRow
from corral.store.transitions import transition_node

log = logging.getLogger(__name__)

#: Automatic scale removes nodes idle this long when the cluster gives no ``idle_timeout``.
DEFAULT_IDLE_TIMEOUT = 600.0
#: Where machines come and go outside Corral (Ray's), how often a pass looks whether they did.
MACHINES_SECONDS = 1.0


@dataclass
class NodeActions:
    """What a pass decided for running jobs and node directories; the loop carries it out."""

    #: (job id, reason): stop the run, back to the queue (``Preempted``, ``NodeRemoved``).
    requeue: list[tuple[int, AttemptReason]] = field(default_factory=list)
    #: Stop the run, the job ends terminated (``deallocation: terminate``).
    terminate: list[int] = field(default_factory=list)
    #: (workspace, cluster, node) of removed nodes, whose directories can go once committed.
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    #: The nodes changed: the policy's view of clusters must be reloaded.
    changed: bool = False


class NodeLifecycle:
    def __init__(self, backends: Backends) -> None:
        self._backend = backends.executor
        self._provider = backends.nodes
        #: Bring clusters to their targets at the next pass (a resize, a freed leaving node, a setup to rerun).
        self.reconcile_needed = True
        self.leaving = 0
        #: Cluster id -> its automatic scale settings (``min_nodes``, ``max_nodes``, ``idle_timeout``).
        self.auto: dict[int, ScaleSpec] = {}
        #: Automatic clusters adding nodes now: their waiting head jobs wait for ``ClusterScaling``.
        self.scaling_up: set[int] = set()
        self.evictions: deque[int] = deque()
        #: Setups running: uid -> (node id, plan); their reports; plans to launch once committed.
        self._setups: dict[str, tuple[int, LaunchPlan]] = {}
        self._reports: list[ProcessExit] = []
        self._launches: list[LaunchPlan] = []
        #: The machines the provider had at the last look, and when that was.
        self._machines: frozenset[str] | None = None
        self._machines_at = 0.0

    def request_reconcile(self) -> None:
        """Bring every cluster to its target at the next pass (a resize, a freed leaving node, a failed pass)."""
        self.reconcile_needed = True

    def take_report(self, report: ProcessExit) -> bool:
        """Keep a setup's report for the next pass; False when it is a job's."""
        if report.job_uid not in self._setups:
            return False
        self._reports.append(report)
        return True

    def step(self, session: Session, now: float, demand: dict[int, int]) -> NodeActions:
        """One pass, in the loop's transaction. ``demand``: nodes the queued jobs of each cluster need."""
        actions = NodeActions()
        if now - self._machines_at >= MACHINES_SECONDS:  # machines that joined or left: nodes to add or replace
            self._look_at_machines(now)
        if self._reports:
            self._finish_setups(session, now)
        if self.auto:
            self._autoscale(session, now, demand)
        if self.evictions:
            self._evict(session, actions)
        if self.reconcile_needed:
            self._reconcile(session, now, actions)
        return actions

    def launch_pending(self) -> None:
        """Start the setups planned by the pass just committed."""
        launches, self._launches = self._launches, []
        for plan in launches:
            self._backend.launch(plan)

    def recover(self, session: Session) -> None:
        """After a restart: the setups of preparing nodes (the backend re-attaches, or says they never ran)."""
        for node, cluster, workspace in self._preparing(session):
            if _setup_of(cluster) is not None:
                plan = self._plan(node, cluster, workspace)
                self._setups[plan.job_uid] = (node.id, plan)
        for _, plan in list(self._setups.values()):
            self._backend.recover(plan)  # reports NOT_STARTED when it never ran: it is launched then

    # ------------------------------------------------------------ steps

    def _autoscale(self, session: Session, now: float, demand: dict[int, int]) -> None:
        """Grow to what the queue needs (up to max_nodes); shrink nodes idle past idle_timeout (to min_nodes)."""
        nodes = session.execute(
            select(NodeRow.cluster_id, NodeRow.state, NodeRow.idle_since).where(
                NodeRow.cluster_id.in_(self.auto), NodeRow.state != NodeState.LEAVING
            )
        ).all()
        for cluster_id, scale in self.auto.items():
            mine = [n for n in nodes if n.cluster_id == cluster_id]
            low, high = scale.min_nodes or 0, scale.max_nodes or 0
            busy = sum(1 for n in mine if n.state in (NodeState.RUNNING, NodeState.PREPARING))
            wanted = max(low, min(high, busy + demand.get(cluster_id, 0)))
            timeout = scale.idle_timeout or DEFAULT_IDLE_TIMEOUT
            idle_long = sum(
                1
                for n in mine
                if n.state == NodeState.IDLE and n.idle_since is not None and now - n.idle_since >= timeout
            )
            current = len(mine)
            target = wanted if wanted > current else max(wanted, current - idle_long)
            if target > current or any(n.state == NodeState.PREPARING for n in mine):
                self.scaling_up.add(cluster_id)
            else:
                self.scaling_up.discard(cluster_id)
            cluster = session.get(ClusterRow, cluster_id)
            if cluster is not None and cluster.target_nodes != target:
                log.info("autoscale: cluster %s from %d to %d nodes", cluster.name, cluster.target_nodes, target)
                cluster.target_nodes = target
                self.reconcile_needed = True

    def _evict(self, session: Session, actions: NodeActions) -> None:
        while self.evictions:
            node = session.get(NodeRow, self.evictions.popleft())
            if node is None or node.state == NodeState.LEAVING:
                continue
            log.info("preempting node %s", node.name)
            transition_node(node, NodeState.LEAVING)
            self.leaving += 1
            self.reconcile_needed = True
            if node.job_id is not None:
                actions.requeue.append((node.job_id, AttemptReason.PREEMPTED))

    def _look_at_machines(self, now: float) -> None:
        self._machines_at = now
        machines = self._provider.machines()
        if machines != self._machines:
            self._machines = machines
            self.reconcile_needed = True

    def _reconcile(self, session: Session, now: float, actions: NodeActions) -> None:
        if self._machines_at != now:  # a reconcile sees the machines of now (looked at once in a pass)
            self._look_at_machines(now)
        self.reconcile_needed = False
        result = reconcile(session, now, self._provider, self._machines)
        self.leaving = result.leaving
        actions.requeue.extend((job_id, AttemptReason.NODE_REMOVED) for job_id in result.requeue)
        actions.terminate.extend(result.terminate)
        actions.removed.extend(result.removed)
        actions.changed = True
        self._start_setups(session)

    def _preparing(self, session: Session) -> list[Any]:
        return list(
            session.execute(
                select(NodeRow, ClusterRow, WorkspaceRow.name)
                .join(ClusterRow, ClusterRow.id == NodeRow.cluster_id)
                .join(WorkspaceRow, WorkspaceRow.id == ClusterRow.workspace_id)
                .where(NodeRow.state == NodeState.PREPARING)
            ).all()
        )

    def _start_setups(self, session: Session) -> None:
        """Plan the setup of every preparing node that has none running (launched once committed)."""
        rows = self._preparing(session)
        alive = {node.id for node, _, _ in rows}
        for node_id, plan in list(self._setups.values()):
            if node_id not in alive:  # removed while preparing
                self._backend.signal(plan, kill=True)
        for node, cluster, workspace in rows:
            uid = setup_uid(node.id)
            if uid in self._setups or _setup_of(cluster) is None:
                continue
            plan = self._plan(node, cluster, workspace)
            self._setups[uid] = (node.id, plan)
            self._launches.append(plan)

    def _plan(self, node: NodeRow, cluster: ClusterRow, workspace: str) -> LaunchPlan:
        setup = cluster.parsed.setup
        assert setup is not None
        return setup_plan(
            node_id=node.id,
            node_name=node.name,
            cluster=cluster.name,
            workspace=workspace,
            gpus=list(node.gpus),
            root=self._provider.node_root(NodeRef(workspace, cluster.name, node.name, tuple(node.gpus), node.ip)),
            ip=node.ip,
            command=setup.command,
            env=dict(setup.env),
            run_as=cluster.run_as,
        )

    def _finish_setups(self, session: Session, now: float) -> None:
        """Preparing nodes whose setup ended become idle, or unusable with the error."""
        reports, self._reports = self._reports, []
        for report in reports:
            node_id, plan = self._setups.pop(report.job_uid)
            self._backend.forget(plan)
            node = session.get(NodeRow, node_id)
            if node is None or node.state != NodeState.PREPARING:
                continue
            if report.kind == ExitKind.NOT_STARTED:
                self.reconcile_needed = True  # never launched (the server stopped first): start it again
            elif report.kind == ExitKind.EXITED and report.exit_code == 0:
                transition_node(node, NodeState.IDLE, idle_since=now, error=None)
            else:
                code = report.exit_code
                transition_node(node, NodeState.UNUSABLE)
                node.error = (
                    f"setup.command failed with exit code {code} (see corral cluster node logs)"
                    if code is not None
                    else f"setup.command could not run: {report.message or 'it vanished without an exit code'}"
                )


def _setup_of(cluster: ClusterRow) -> SetupSpec | None:
    """The cluster's setup; None also when its stored spec does not load (its preparing nodes stay so)."""
    try:
        return cluster.parsed.setup
    except UnloadableSpec as exc:
        log.error("%s: the setup of its nodes is not run", exc.message)
        return None
