"""The ``pytorch`` toolkit: ``processes_per_node`` copies of the script on every node.

Each process gets what ``torchrun`` would give it (``MASTER_ADDR``, ``MASTER_PORT``,
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``NODE_RANK``,
``GROUP_RANK``), so ``init_process_group()`` with no arguments works, plus
``CORRAL_PYTORCH_INIT_METHOD`` (``tcp://addr:port``) and the Batch AI twins. Corral
starts the processes itself rather than under torchrun's agent: one fewer process
per node, and a failed rank is seen (and the job ended) by the control loop.

With ``backend: mpi``, mpirun starts the processes instead (:mod:`corral.launch.mpi`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from corral.launch.common import Proc, build_plan, python_command
from corral.launch.env import node_environment, twins
from corral.launch.mpi import plan_mpi_command
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment

if TYPE_CHECKING:
    from corral.core.specs import JobSpec


def pytorch_backend(spec: JobSpec, gpus_per_node: int) -> str:
    assert spec.pytorch is not None
    chosen: str | None = spec.pytorch.backend
    return chosen or ("nccl" if gpus_per_node else "gloo")


def processes_per_node(spec: JobSpec, gpus_per_node: int) -> int:
    assert spec.pytorch is not None
    given: int | None = spec.pytorch.processes_per_node
    return given or max(1, gpus_per_node)


def plan_pytorch(ctx: JobContext, nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    tk = ctx.spec.pytorch
    node_list = list(nodes)
    gpus = len(node_list[0].gpus)
    per_node = processes_per_node(ctx.spec, gpus)
    backend = pytorch_backend(ctx.spec, gpus)
    command = python_command(tk.interpreter, tk.script, tk.args)
    if backend == "mpi":
        return plan_mpi_command(ctx, node_list, command, per_node * len(node_list), {"PYTORCH_BACKEND": "mpi"})
    master, port = node_list[0].ip, str(ctx.ports[0])
    world = per_node * len(node_list)
    procs = []
    for node_rank, node in enumerate(node_list):
        common = {
            "MASTER_ADDR": master,
            "MASTER_PORT": port,
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(per_node),
            "NODE_RANK": str(node_rank),
            "GROUP_RANK": str(node_rank),
            # As torchrun does, keep processes from oversubscribing the node's cpus with threads.
            "OMP_NUM_THREADS": str(max(1, node.cpus // per_node)),
            **twins({"PYTORCH_INIT_METHOD": f"tcp://{master}:{port}", "PYTORCH_BACKEND": backend}),
        }
        base = node_environment(ctx, node_list, node_rank, common)
        for local in range(per_node):
            rank = node_rank * per_node + local
            # A process's identity is set last: the job's env may override node-wide values, not these.
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(local), **twins({"TASK_INDEX": str(rank)})}
            procs.append(Proc(rank, node_rank, command, env))
    return build_plan(ctx, node_list, procs)
