"""Pick the toolkit's planner for a job: ``plan_launch(ctx, nodes) -> LaunchPlan``.

Also what the scheduler and the API need to know of a job before it is planned:
how many ports an attempt reserves, and how many ranks (log files) it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from corral.launch.caffe2 import plan_caffe2
from corral.launch.custom import plan_custom
from corral.launch.mpi import mpi_processes, plan_mpi
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment
from corral.launch.pytorch import plan_pytorch, processes_per_node, pytorch_backend
from corral.launch.tensorflow import plan_tensorflow, tensorflow_tasks

if TYPE_CHECKING:
    from corral.core.specs import JobSpec

Planner = Callable[[JobContext, Sequence[NodeAssignment]], LaunchPlan]

PLANNERS: dict[str, Planner] = {
    "custom": plan_custom,
    "pytorch": plan_pytorch,
    "tensorflow": plan_tensorflow,
    "mpi": plan_mpi,
    "horovod": plan_mpi,
    "chainer": plan_mpi,
    "cntk": plan_mpi,
    "caffe2": plan_caffe2,
}


def plan_launch(ctx: JobContext, nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    return PLANNERS[ctx.spec.toolkit](ctx, nodes)


def ports_needed(spec: JobSpec, gpus_per_node: int) -> int:
    """Ports an attempt reserves: PyTorch's rendezvous, one per TensorFlow task, else none."""
    toolkit = spec.toolkit
    if toolkit == "pytorch":
        return 0 if pytorch_backend(spec, gpus_per_node) == "mpi" else 1
    if toolkit == "tensorflow":
        return len(tensorflow_tasks(spec))
    return 0


def rank_count(spec: JobSpec, gpus_per_node: int) -> int:
    """Processes (ranks, each with its logs) the job has on a cluster of nodes with ``gpus_per_node`` GPUs."""
    toolkit = spec.toolkit
    node_count: int = spec.node_count
    if toolkit == "pytorch":
        return node_count * processes_per_node(spec, gpus_per_node)
    if toolkit == "tensorflow":
        return len(tensorflow_tasks(spec))
    if toolkit in ("mpi", "horovod", "chainer", "cntk"):
        return mpi_processes(spec, node_count, gpus_per_node)
    return node_count


def rank_nodes(spec: JobSpec, node_names: Sequence[str], *, gpus_per_node: int, cpus: int = 1) -> list[str | None]:
    """The node each rank runs on, in rank order, as the planner places them (None where mpirun does: it
    fills the hostfile's slots itself)."""
    if spec.toolkit in ("mpi", "horovod", "chainer", "cntk"):
        return [None] * rank_count(spec, gpus_per_node)
    nodes = [
        NodeAssignment(i, name, "127.0.0.1", "/", tuple(range(gpus_per_node)), cpus)
        for i, name in enumerate(node_names)
    ]
    ports = tuple(range(1, 1 + ports_needed(spec, gpus_per_node)))
    ctx = JobContext("w", "e", "j", "0" * 32, 1, "/", spec, ports=ports)
    plan = plan_launch(ctx, nodes)
    return [node_names[p.node_rank] for p in sorted(plan.processes, key=lambda p: p.rank)]
