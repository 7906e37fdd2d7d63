"""The ``custom`` toolkit: the command runs once on every node of the job.

Each node can branch on ``CORRAL_NODE_RANK``; rank = node rank.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.launch.common import Proc, build_plan
from corral.launch.env import node_environment
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment


def plan_custom(ctx: JobContext, nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    node_list = list(nodes)
    command = ctx.spec.custom.command
    procs = [Proc(rank, rank, command, node_environment(ctx, node_list, rank)) for rank in range(len(node_list))]
    return build_plan(ctx, node_list, procs)
