"""Pick the toolkit's planner for a job: ``plan_launch(ctx, nodes) -> LaunchPlan``."""

from __future__ import annotations

from collections.abc import Callable

from corral.launch.custom import plan_custom
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment

PLANNERS: dict[str, Callable[[JobContext, list[NodeAssignment]], LaunchPlan]] = {"custom": plan_custom}


def plan_launch(ctx: JobContext, nodes: list[NodeAssignment]) -> LaunchPlan:
    return PLANNERS[ctx.spec.toolkit](ctx, nodes)
