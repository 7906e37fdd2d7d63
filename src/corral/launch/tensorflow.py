"""The ``tensorflow`` toolkit: a chief, workers and parameter servers, each with its ``TF_CONFIG``.

Tasks in rank order: the chief (rank 0, ``master_args``), then ``worker_count``
workers (``worker_args``), then ``ps_count`` parameter servers (``ps_args``), spread
over the job's nodes round robin. Each task has its own port of the attempt's
reserved block, so no two processes on one machine share one. ``TF_CONFIG`` has a
``chief`` (Batch AI's had none, which broke ``tf.estimator``); besides it,
``CORRAL_WORKER_HOSTS``, ``CORRAL_PS_HOSTS``, ``CORRAL_CHIEF_HOST``,
``CORRAL_TASK_TYPE`` and ``CORRAL_TASK_INDEX`` (with Batch AI twins).

A one-node job that gives no counts is not distributed: one chief, no workers, no ps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from corral.launch.common import Proc, build_plan, python_command
from corral.launch.env import node_environment, twins
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment

if TYPE_CHECKING:
    from corral.core.specs import JobSpec


def tensorflow_tasks(spec: JobSpec) -> list[tuple[str, int]]:
    """``[("chief", 0), ("worker", 0), …, ("ps", 0), …]``: the job's tasks in rank order."""
    tk = spec.tensorflow
    assert tk is not None
    node_count = spec.node_count
    distributed = node_count > 1 or tk.worker_count is not None or tk.ps_count is not None
    workers = (node_count if tk.worker_count is None else tk.worker_count) if distributed else 0
    ps = (1 if tk.ps_count is None else tk.ps_count) if distributed else 0
    return [("chief", 0)] + [("worker", i) for i in range(workers)] + [("ps", i) for i in range(ps)]


def plan_tensorflow(ctx: JobContext, nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    tk = ctx.spec.tensorflow
    node_list = list(nodes)
    tasks = tensorflow_tasks(ctx.spec)
    placed = [(rank % len(node_list), kind, index) for rank, (kind, index) in enumerate(tasks)]
    addresses = [f"{node_list[node].ip}:{ctx.ports[rank]}" for rank, (node, _, _) in enumerate(placed)]
    cluster: dict[str, list[str]] = {}
    for (kind, _), address in zip(tasks, addresses, strict=True):
        cluster.setdefault(kind, []).append(address)
    hosts = twins(
        {
            "CHIEF_HOST": cluster["chief"][0],
            "WORKER_HOSTS": ",".join(cluster.get("worker", [])),
            "PS_HOSTS": ",".join(cluster.get("ps", [])),
        }
    )
    args = {"chief": tk.master_args, "worker": tk.worker_args, "ps": tk.ps_args}
    bases = [node_environment(ctx, node_list, n, hosts) for n in range(len(node_list))]
    procs = []
    for rank, (node, kind, index) in enumerate(placed):
        config = {"cluster": cluster, "task": {"type": kind, "index": index}, "environment": "cloud"}
        own = {"TF_CONFIG": json.dumps(config), **twins({"TASK_TYPE": kind, "TASK_INDEX": str(index)})}
        command = python_command(tk.interpreter, tk.script, args[kind])
        procs.append(Proc(rank, node, command, {**bases[node], **own}))
    return build_plan(ctx, node_list, procs)
