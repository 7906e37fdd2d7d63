"""Rebuild a job's launch plan from its rows (the same plan before and after a restart)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from corral.backends.base import NodeProvider, NodeRef
from corral.core.specs import ClusterSpec, JobSpec
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment
from corral.launch.planner import plan_launch


@dataclass
class JobToRun:
    """What placing, planning and running a job needs of its row, read as plain columns (``runs.load_for_launch``):
    the ORM's objects cost the control loop more than its statements."""

    id: int
    uid: str
    name: str
    state: str
    cluster_id: int | None
    workspace_id: int
    priority: int
    node_count: int
    attempt_count: int
    submitted_by: str
    job_dir: str
    secrets: dict[str, Any]
    code_archive: str | None
    run_as: str | None
    spec: dict[str, Any]


@dataclass(frozen=True)
class ClusterToRun:
    """What planning a job needs of its cluster: its id, its name and its spec, parsed (``runs.load_for_launch``)."""

    id: int
    name: str
    parsed: ClusterSpec


class PlacedNode(Protocol):
    """What a plan needs of each of its nodes (a ``NodeRow``, or a row of just these columns)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def gpus(self) -> list[int]: ...


def job_spec(job: JobToRun) -> JobSpec:
    """The job's spec as the planners see it (secrets come from their own column)."""
    return JobSpec.model_validate({**job.spec, "secrets": {}})


def environment_of(spec: JobSpec, cluster: ClusterToRun) -> dict[str, Any] | None:
    """The job's environment (else its cluster's) as the node builds it; ``{"server": True}``: the server's own;
    None: the machine's."""
    chosen = spec.environment if spec.environment is not None else cluster.parsed.environment
    if chosen is None:
        return None
    if chosen.server:
        return {"server": True}
    return chosen.model_dump(mode="json", exclude={"server"})


def plan_for(
    *,
    job: JobToRun,
    spec: JobSpec,
    attempt: int,
    ports: Sequence[int],
    workspace: str,
    experiment: str,
    cluster: ClusterToRun,
    nodes: Sequence[PlacedNode],
    provider: NodeProvider,
    staged_inputs: tuple[dict[str, Any], ...] = (),
    staged_outputs: tuple[dict[str, Any], ...] = (),
) -> LaunchPlan:
    shape = cluster.parsed.node
    cache, cache_limit = provider.input_cache()
    ctx = JobContext(
        workspace=workspace,
        experiment=experiment,
        job_name=job.name,
        job_uid=job.uid,
        attempt=attempt,
        job_dir=job.job_dir,
        spec=spec,
        secrets=dict(job.secrets),
        code_archive=job.code_archive,
        ports=tuple(ports),
        run_as=job.run_as,
        staged_inputs=staged_inputs,
        input_cache=cache,
        input_cache_limit=cache_limit,
        staged_outputs=staged_outputs,
        environment=environment_of(spec, cluster),
    )
    assignments = [
        NodeAssignment(
            node_id=node.id,
            name=node.name,
            ip=node.ip,
            root=provider.node_root(NodeRef(workspace, cluster.name, node.name, tuple(node.gpus), node.ip)),
            gpus=tuple(node.gpus),
            cpus=shape.cpus,
            memory=shape.memory,
        )
        for node in nodes
    ]
    return plan_launch(ctx, assignments)
