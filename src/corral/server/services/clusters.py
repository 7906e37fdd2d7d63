"""Clusters and their nodes.

This version runs ``backend: local`` clusters, manual or automatic in size, with
node setup and low-priority (preemptible) nodes; the control loop brings their
nodes to the target count. Settings not available yet (mounts, other backends)
are refused with an error that names the field, rather than accepted and ignored.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.backends.base import NodeAccess, NodeProvider, NodeRef
from corral.core.errors import AlreadyExists, Conflict, InvalidSpec, UnloadableSpec
from corral.core.models import Cluster, Node, NodeCounts
from corral.core.spec_parsing import parse_spec
from corral.core.specs import ClusterSpec
from corral.core.states import NodeState
from corral.data.volumes import VolumeNotFound, staged_mounts, volume_rows
from corral.scheduler.nodes import add_nodes, held
from corral.scheduler.setup import LOG_NAME as SETUP_LOG
from corral.server.services.lookup import cluster_row, node_row, unfinished_jobs, workspace_row
from corral.store.tables import ClusterRow, ExperimentRow, JobRow, NodeRow
from corral.store.transitions import transition_node


def _refuse_unsupported(spec: ClusterSpec, provider: NodeProvider) -> None:
    """What the server's backend does not do is refused, naming the field, rather than accepted and ignored."""
    name = provider.backend
    asked = [  # (field, asked for, the feature it needs, why not)
        ("backend", spec.backend != name, None, f"this server runs the {name} backend"),
        ("setup", spec.setup is not None, "setup", f"the {name} backend runs no node setup"),
        ("priority", spec.priority == "low", "preemption", f"the {name} backend has no preemptible nodes"),
        ("node.gpus", spec.node.gpus > 0, "gpus", f"the {name} backend has no GPUs"),
    ]
    details = [
        {"loc": loc, "message": why}
        for loc, wanted, feature, why in asked
        if wanted and (feature is None or feature not in provider.features)
    ]
    if details:
        raise InvalidSpec("cluster: " + "; ".join(f"{d['loc']}: {d['message']}" for d in details), details=details)


def initial_nodes(spec: ClusterSpec) -> int:
    if not spec.scale.is_auto:
        return spec.scale.nodes or 0
    return spec.scale.initial_nodes if spec.scale.initial_nodes is not None else spec.scale.min_nodes or 0


def to_model(session: Session, row: ClusterRow, workspace: str) -> Cluster:
    counts: dict[str, Any] = dict(
        session.execute(
            select(NodeRow.state, func.count()).where(NodeRow.cluster_id == row.id).group_by(NodeRow.state)
        ).all()
    )
    spec: ClusterSpec | None
    warnings = list(row.warnings)
    try:
        spec = row.parsed
    except UnloadableSpec as exc:  # shown (and deletable) all the same: its warning says what is wrong
        spec, warnings = None, [f"{exc.message}; its queued jobs fail: delete it and create it again", *warnings]
    return Cluster(
        name=row.name,
        workspace=workspace,
        spec=spec,
        allocation_state=row.allocation_state,
        current_nodes=sum(counts.values()),
        target_nodes=row.target_nodes,
        node_counts=NodeCounts(**counts),
        warnings=warnings,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
    )


def _check_size(most: int, limit: int, loc: str) -> None:
    """Refuse a cluster larger than the server's ``max_nodes_per_cluster`` before anything is planned for it."""
    if most > limit:
        message = f"more than the {limit} nodes a cluster may have (server setting max_nodes_per_cluster)"
        raise InvalidSpec(f"cluster: {loc}: {message}, got {most}", details=[{"loc": loc, "message": message}])


def create_cluster(
    session: Session,
    *,
    workspace: str,
    spec_data: dict[str, Any],
    max_nodes: int,
    provider: NodeProvider,
    run_as: str | None = None,
) -> Cluster:
    """A new cluster with its first nodes (as many as the provider can give now; the control loop adds the
    rest when it can); its setup runs as the Unix account ``run_as`` (None: the server's)."""
    spec = parse_spec(ClusterSpec, spec_data, source="cluster")
    _refuse_unsupported(spec, provider)
    if spec.scale.is_auto:
        _check_size(spec.scale.max_nodes or 0, max_nodes, "scale.max_nodes")
    else:
        _check_size(spec.scale.nodes or 0, max_nodes, "scale.nodes")
    ws = workspace_row(session, workspace)
    if session.scalars(
        select(ClusterRow).where(ClusterRow.workspace_id == ws.id, ClusterRow.name == spec.name)
    ).first():
        raise AlreadyExists(f"cluster {spec.name!r} already exists in workspace {workspace!r}")
    if spec.mounts:
        try:
            staged_mounts(spec.mounts, (), volume_rows(session, [ws.id]).get(ws.id, []))
        except VolumeNotFound as exc:
            raise exc.invalid_spec("cluster") from None
    count = initial_nodes(spec)
    warnings = provider.check(spec, spec.scale.max_nodes if spec.scale.is_auto else count)  # type: ignore[arg-type]
    row = ClusterRow(
        workspace_id=ws.id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        allocation_state="steady",
        target_nodes=count,
        warnings=warnings,
        created_at=time.time(),
        run_as=run_as,
    )
    session.add(row)
    session.flush()
    if add_nodes(session, row, [], count, provider, held(session), row.created_at) < count:
        row.allocation_state = "resizing"
    session.flush()
    return to_model(session, row, workspace)


def list_clusters(session: Session, *, workspace: str) -> list[Cluster]:
    ws = workspace_row(session, workspace)
    rows = session.scalars(select(ClusterRow).where(ClusterRow.workspace_id == ws.id).order_by(ClusterRow.name))
    return [to_model(session, r, workspace) for r in rows]


def get_cluster(session: Session, *, workspace: str, name: str) -> Cluster:
    ws = workspace_row(session, workspace)
    return to_model(session, cluster_row(session, ws, name), workspace)


def delete_cluster(session: Session, *, workspace: str, name: str) -> None:
    ws = workspace_row(session, workspace)
    row = cluster_row(session, ws, name)
    active = unfinished_jobs(session, cluster_id=row.id)
    if active:
        raise Conflict(f"cluster {name!r} has {active} queued or running jobs; terminate them first")
    session.delete(row)


def list_nodes(session: Session, *, workspace: str, cluster: str) -> list[Node]:
    ws = workspace_row(session, workspace)
    row = cluster_row(session, ws, cluster)
    out = []
    query = (
        select(NodeRow, JobRow.name, ExperimentRow.name)
        .outerjoin(JobRow, JobRow.id == NodeRow.job_id)
        .outerjoin(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
        .where(NodeRow.cluster_id == row.id)
        .order_by(NodeRow.index)
    )
    for node, job_name, exp_name in session.execute(query).all():
        out.append(node_model(node, cluster=cluster, job=job_name, experiment=exp_name))
    return out


def node_model(node: NodeRow, *, cluster: str, job: str | None = None, experiment: str | None = None) -> Node:
    return Node(
        name=node.name,
        cluster=cluster,
        index=node.index,
        state=NodeState(node.state),
        ip=node.ip,
        gpus=list(node.gpus),
        job=job,
        experiment=experiment,
        error=node.error,
    )


def preemptible_node(session: Session, *, workspace: str, cluster: str, node: str) -> NodeRow:
    """The node to preempt; only nodes of a ``priority: low`` cluster can be."""
    row, found = node_row(session, workspace=workspace, cluster=cluster, node=node)
    if row.parsed.priority != "low":
        raise Conflict(f"cluster {cluster!r} is dedicated; only the nodes of a priority: low cluster can be preempted")
    if found.state == NodeState.LEAVING:
        raise Conflict(f"node {node!r} is already leaving")
    return found


def resize_cluster(
    session: Session,
    *,
    workspace: str,
    name: str,
    nodes: int,
    max_nodes: int,
    provider: NodeProvider,
    deallocation: str | None = None,
) -> Cluster:
    """Set a manual node count (and what a shrink does to running jobs); the control loop gets there."""
    _check_size(nodes, max_nodes, "nodes")
    row = cluster_row(session, workspace_row(session, workspace), name)
    spec = row.parsed
    scale = {"nodes": nodes, "deallocation": deallocation or spec.scale.deallocation}
    return _rescale(session, row, workspace, spec, scale, most=nodes, target=nodes, provider=provider)


def _rescale(
    session: Session,
    row: ClusterRow,
    workspace: str,
    spec: ClusterSpec,
    scale: dict[str, Any],
    *,
    most: int,
    target: int,
    provider: NodeProvider,
) -> Cluster:
    """Give the cluster new scale settings and target; the control loop brings its nodes there."""
    updated = parse_spec(ClusterSpec, {**spec.model_dump(mode="json"), "scale": scale}, source="cluster")
    provider.check(updated, most)  # refuses, say, GPUs the backend could never give
    row.spec = updated.model_dump(mode="json")
    if row.target_nodes != target:
        row.allocation_state = "resizing"
    row.target_nodes = target
    session.flush()
    return to_model(session, row, workspace)


def node_setup_log(session: Session, access: NodeAccess, *, workspace: str, cluster: str, node: str) -> str:
    """The output of the node's setup.command ('' when it has none or it has not written yet)."""
    found = node_row(session, workspace=workspace, cluster=cluster, node=node)[1]  # ``node`` may be an index
    return access.read_text(NodeRef(workspace, cluster, found.name, tuple(found.gpus), found.ip), SETUP_LOG)


def autoscale_cluster(
    session: Session,
    *,
    workspace: str,
    name: str,
    min_nodes: int,
    max_nodes: int,
    limit: int,
    provider: NodeProvider,
    idle_timeout: float | None = None,
) -> Cluster:
    """Switch a cluster to automatic scale between ``min_nodes`` and ``max_nodes`` (at most ``limit``)."""
    _check_size(max_nodes, limit, "max_nodes")
    row = cluster_row(session, workspace_row(session, workspace), name)
    spec = row.parsed
    scale: dict[str, Any] = {"min_nodes": min_nodes, "max_nodes": max_nodes, "deallocation": spec.scale.deallocation}
    if idle_timeout is not None:
        scale["idle_timeout"] = idle_timeout
    elif spec.scale.idle_timeout is not None:
        scale["idle_timeout"] = spec.scale.idle_timeout
    target = max(min_nodes, min(max_nodes, row.target_nodes))
    return _rescale(session, row, workspace, spec, scale, most=max_nodes, target=target, provider=provider)


def recover_node(session: Session, *, workspace: str, cluster: str, node: str) -> Node:
    """Return an unusable node to service: idle again, or preparing when the cluster has a setup to rerun."""
    row, found = node_row(session, workspace=workspace, cluster=cluster, node=node)
    if found.state != NodeState.UNUSABLE:
        raise Conflict(f"node {node!r} is {found.state}, not unusable: nothing to recover")
    target = NodeState.PREPARING if row.parsed.setup else NodeState.IDLE
    transition_node(found, target, error=None, job_id=None, idle_since=time.time())
    session.flush()
    return node_model(found, cluster=cluster)
