"""Clusters' nodes brought to their target count (run by the control loop when something changed).

Growing adds nodes (``idle``, or ``preparing`` while their setup runs) as the backend's node provider
gives them (an address, GPUs no other node holds). Shrinking
removes nodes, idle ones first (highest index first); a busy node being removed is
``leaving`` and what happens to its job is the cluster's ``scale.deallocation``:
``requeue`` (the job is stopped and goes back to the queue), ``terminate`` (the job is
stopped and ends ``terminated``) or ``wait`` (the job finishes; the node takes no new
work). A leaving node goes once its job has ended. A cluster is ``resizing`` while its
node count differs from its target or a node is leaving, else ``steady``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.backends.base import NodeProvider
from corral.core.errors import UnloadableSpec
from corral.core.states import NodeState
from corral.store.tables import ClusterRow, NodeRow, WorkspaceRow
from corral.store.transitions import transition_node

log = logging.getLogger(__name__)


@dataclass
class Reconciled:
    #: Jobs on removed nodes to stop, by what happens to them then.
    requeue: list[int] = field(default_factory=list)
    terminate: list[int] = field(default_factory=list)
    #: (workspace, cluster, node) of the nodes removed: their directories can go.
    removed: list[tuple[str, str, str]] = field(default_factory=list)
    #: Nodes still leaving (the loop reconciles again when their jobs end).
    leaving: int = 0


@dataclass
class Held:
    """What the nodes that exist hold: a new node gets none of it."""

    gpus: set[int]
    ips: set[str]


def held(session: Session) -> Held:
    rows = session.execute(select(NodeRow.gpus, NodeRow.ip)).all()
    return Held(gpus={g for gpus, _ip in rows for g in gpus}, ips={ip for _gpus, ip in rows})


def lock_clusters(session: Session) -> None:
    """First in every pass's transaction (PostgreSQL; SQLite has one writer anyway): the pass takes clusters
    before nodes, as a request that deletes or resizes a cluster does. Taken after the nodes a pass releases
    first, a cluster lock waited for a request that held the cluster and waited for those nodes: a deadlock.
    ``FOR NO KEY UPDATE`` lets submissions (which only reference a cluster) go on meanwhile."""
    if session.get_bind().dialect.name != "sqlite":  # where it would lock nothing, it costs a query per pass
        session.execute(select(ClusterRow.id).order_by(ClusterRow.id).with_for_update(key_share=True))


def reconcile(
    session: Session, now: float, provider: NodeProvider, machines: frozenset[str] | None = None
) -> Reconciled:
    """Bring every cluster to its target. ``machines``: the provider's (``NodeProvider.machines``), where machines
    come and go outside Corral."""
    out = Reconciled()
    taken = held(session)
    # Locked as lock_clusters locks them (that lock already holds those that existed when the pass began; this
    # one takes a cluster made since): a cluster deleted by a request while this pass runs would otherwise get
    # nodes inserted for it, and the pass would fail on the foreign key. Not FOR UPDATE: that would hold up the
    # submissions that only reference a cluster until the pass ends.
    clusters = session.execute(
        select(ClusterRow, WorkspaceRow.name).join(WorkspaceRow).with_for_update(of=ClusterRow, key_share=True)
    ).all()
    for cluster, workspace in clusters:
        try:
            spec = cluster.parsed
        except UnloadableSpec as exc:  # nothing is known of its nodes' shape or scale: they stay as they are
            log.error("%s: its nodes are not reconciled", exc.message)
            continue
        nodes = list(session.scalars(select(NodeRow).where(NodeRow.cluster_id == cluster.id)))
        gone: set[int] = set()
        if machines is not None:  # a node in no use whose machine went is replaced (a running one's job says so)
            for node in nodes:
                free = node.job_id is None and node.state in (NodeState.IDLE, NodeState.UNUSABLE)
                if free and node.ip not in machines:
                    log.info("node %s of cluster %s: its machine %s is gone", node.name, cluster.name, node.ip)
                    out.removed.append((workspace, cluster.name, node.name))
                    session.delete(node)
                    gone.add(node.id)
            nodes = [n for n in nodes if n.id not in gone]
        staying = [n for n in nodes if n.state != NodeState.LEAVING]
        excess = len(staying) - cluster.target_nodes
        if excess < 0:
            add_nodes(session, cluster, nodes, -excess, provider, taken, now)
        elif excess > 0:
            order = {NodeState.UNUSABLE: 0, NodeState.PREPARING: 1, NodeState.IDLE: 2, NodeState.RUNNING: 3}
            victims = sorted(staying, key=lambda n: (order.get(NodeState(n.state), 4), -n.index))[:excess]
            deallocation = spec.scale.deallocation
            for node in victims:
                if node.job_id is None:
                    out.removed.append((workspace, cluster.name, node.name))
                    session.delete(node)
                    gone.add(node.id)
                    continue
                transition_node(node, NodeState.LEAVING)
                if deallocation == "requeue":
                    out.requeue.append(node.job_id)
                elif deallocation == "terminate":
                    out.terminate.append(node.job_id)
        # Leaving nodes whose job has ended go now.
        for node in nodes:
            if node.state == NodeState.LEAVING and node.job_id is None and node.id not in gone:
                out.removed.append((workspace, cluster.name, node.name))
                session.delete(node)
        session.flush()
        remaining = list(session.scalars(select(NodeRow).where(NodeRow.cluster_id == cluster.id)))
        leaving = sum(1 for n in remaining if n.state == NodeState.LEAVING)
        out.leaving += leaving
        steady = leaving == 0 and len(remaining) == cluster.target_nodes
        cluster.allocation_state = "steady" if steady else "resizing"
    ips = frozenset(session.scalars(select(NodeRow.ip)))
    provider.hold(ips, sum(cluster.target_nodes for cluster, _ in clusters))
    return out


def add_nodes(
    session: Session,
    cluster: ClusterRow,
    nodes: list[NodeRow],
    count: int,
    provider: NodeProvider,
    taken: Held,
    now: float,
) -> int:
    """Add up to ``count`` nodes (the lowest free indexes) as the provider gives them; how many it gave (fewer
    while the GPUs they need are held: the cluster stays resizing)."""
    spec = cluster.parsed
    given = provider.new_nodes(spec, count, held_gpus=taken.gpus, held_ips=frozenset(taken.ips))
    indexes = {n.index for n in nodes}
    index = 0
    state = NodeState.PREPARING if spec.setup else NodeState.IDLE
    for new in given:
        while index in indexes:
            index += 1
        taken.gpus.update(new.gpus)
        taken.ips.add(new.ip)
        node = NodeRow(
            cluster_id=cluster.id, name=f"node-{index}", index=index, state=state, ip=new.ip, gpus=list(new.gpus)
        )
        node.idle_since = now
        session.add(node)
        nodes.append(node)
        indexes.add(index)
    return len(given)
