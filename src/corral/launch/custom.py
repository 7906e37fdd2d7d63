"""The ``custom`` toolkit: the command runs once on every node of the job.

Each node can branch on ``CORRAL_NODE_RANK``. Logs: ``stdout-<node rank>.txt``
and ``stderr-<node rank>.txt`` in the job's stdouterr directory.
"""

from __future__ import annotations

from pathlib import PurePath

from corral.launch.env import node_environment, node_paths, output_dir
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment, NodePlan, ProcessPlan


def plan_custom(ctx: JobContext, nodes: list[NodeAssignment]) -> LaunchPlan:
    spec = ctx.spec
    logs = ctx.stdouterr_dir
    node_plans = []
    for rank, node in enumerate(nodes):
        paths = node_paths(ctx, node)
        process = ProcessPlan(
            rank=rank,
            command=spec.custom.command,
            env=node_environment(ctx, nodes, rank),
            stdout=str(PurePath(logs, f"stdout-{rank}.txt")),
            stderr=str(PurePath(logs, f"stderr-{rank}.txt")),
        )
        node_plans.append(
            NodePlan(
                rank=rank,
                node_id=node.node_id,
                node_name=node.name,
                exit_file=str(PurePath(ctx.attempt_dir, f"node-{rank}.exit")),
                workdir=paths["job_temp"],
                prepare_command=spec.prepare.command if spec.prepare else None,
                prepare_log=str(PurePath(logs, f"prepare-{rank}.txt")),
                processes=(process,),
                code_archive=ctx.code_archive,
            )
        )
    shared = [
        ctx.attempt_dir,
        logs,
        str(PurePath(ctx.job_dir, "shared")),
        str(PurePath(ctx.job_dir, "checkpoints")),
        *(output_dir(ctx, o.path, o.suffix or o.id) for o in spec.outputs),
    ]
    return LaunchPlan(
        job_uid=ctx.job_uid,
        attempt=ctx.attempt,
        attempt_dir=ctx.attempt_dir,
        shared_dirs=tuple(shared),
        nodes=tuple(node_plans),
        grace_seconds=spec.limits.termination_grace,
        secret_values=tuple(v for v in ctx.secrets.values() if v),
    )
