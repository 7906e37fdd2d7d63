"""The ``caffe2`` toolkit: one process per node, each a shard of the data.

Shards meet through a file store: ``CORRAL_CAFFE2_FILE_STORE``, a fresh directory
per attempt under the shared job temp (``CORRAL_SHARED_JOB_TEMP``), so a retried
attempt never reads the rendezvous files of the one before. ``CORRAL_SHARD_ID``
and ``CORRAL_NUM_SHARDS`` give the shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

from corral.launch.common import Proc, build_plan, python_command
from corral.launch.env import node_environment, twins
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment


def plan_caffe2(ctx: JobContext, nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    tk = ctx.spec.caffe2
    node_list = list(nodes)
    store = str(PurePath(ctx.layout.shared, f"caffe2-attempt-{ctx.attempt}"))
    command = python_command(tk.interpreter, tk.script, tk.args)
    procs = []
    for rank in range(len(node_list)):
        shard = twins({"SHARD_ID": str(rank), "NUM_SHARDS": str(len(node_list)), "CAFFE2_FILE_STORE": store})
        procs.append(Proc(rank, rank, command, node_environment(ctx, node_list, rank, shard)))
    return build_plan(ctx, node_list, procs, extra_dirs=[store])
