"""What every planner shares: turning a list of processes into a :class:`LaunchPlan`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from corral.launch.env import node_environment, node_paths, output_dir
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment, NodePlan, ProcessPlan


@dataclass(frozen=True)
class Proc:
    """One process a planner wants: where it runs, what it runs, with which environment."""

    rank: int
    node_rank: int
    command: str
    env: dict[str, str]
    #: Log file name (both streams) instead of ``stdout-<rank>.txt``/``stderr-<rank>.txt``.
    log_name: str | None = None
    sweep_session: bool = False


def python_command(interpreter: str, script: str, args: str) -> str:
    """``interpreter script args`` as shell text: ``$VARIABLES`` in any part expand on the node."""
    return " ".join(part for part in (interpreter, script, args) if part)


def build_plan(
    ctx: JobContext,
    nodes: Sequence[NodeAssignment],
    procs: Iterable[Proc],
    *,
    extra_dirs: Iterable[str] = (),
    files: Iterable[tuple[str, str]] = (),
) -> LaunchPlan:
    spec = ctx.spec
    logs = ctx.stdouterr_dir
    by_node: list[list[ProcessPlan]] = [[] for _ in nodes]
    for proc in procs:
        if proc.log_name is not None:
            stdout = stderr = str(PurePath(logs, proc.log_name))
        else:
            stdout = str(PurePath(logs, f"stdout-{proc.rank}.txt"))
            stderr = str(PurePath(logs, f"stderr-{proc.rank}.txt"))
        by_node[proc.node_rank].append(
            ProcessPlan(
                rank=proc.rank,
                node_rank=proc.node_rank,
                command=proc.command,
                env=proc.env,
                stdout=stdout,
                stderr=stderr,
                exit_file=str(PurePath(ctx.attempt_dir, f"rank-{proc.rank}.exit")),
                sweep_session=proc.sweep_session,
            )
        )
    prepare = spec.prepare.command if spec.prepare else None
    node_list = list(nodes)
    node_plans = []
    for rank, node in enumerate(node_list):
        processes = sorted(by_node[rank], key=lambda p: p.rank)
        node_plans.append(
            NodePlan(
                rank=rank,
                node_id=node.node_id,
                node_name=node.name,
                workdir=node_paths(ctx, node)["job_temp"],
                prepare_command=prepare,
                prepare_log=str(PurePath(logs, f"prepare-{rank}.txt")),
                prepare_exit_file=str(PurePath(ctx.attempt_dir, f"prepare-{rank}.exit")),
                processes=tuple(processes),
                prepare_env=node_environment(ctx, node_list, rank) if prepare else {},
                code_archive=ctx.code_archive,
            )
        )
    shared = [
        ctx.attempt_dir,
        logs,
        str(PurePath(ctx.job_dir, "shared")),
        str(PurePath(ctx.job_dir, "checkpoints")),
        *(output_dir(ctx, o.path, o.suffix or o.id) for o in spec.outputs),
        *extra_dirs,
    ]
    return LaunchPlan(
        job_uid=ctx.job_uid,
        attempt=ctx.attempt,
        attempt_dir=ctx.attempt_dir,
        shared_dirs=tuple(shared),
        nodes=tuple(node_plans),
        grace_seconds=spec.limits.termination_grace,
        secret_values=tuple(v for v in ctx.secrets.values() if v),
        files=tuple(files),
        ports=ctx.ports,
    )
