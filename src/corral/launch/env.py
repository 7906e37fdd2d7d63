"""The environment of DESIGN.md §5 for one node of one job, with Batch AI twins.

Every ``CORRAL_X`` also appears as ``AZ_BATCHAI_X`` so scripts written for
Azure Batch AI run unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath

from corral.core.specs import mount_macro, store_location
from corral.launch.layout import RUNTIME_FOLDER, node_job_paths
from corral.launch.plan import JobContext, NodeAssignment

TWIN_PREFIX = "AZ_BATCHAI_"


def output_base(ctx: JobContext, path: str) -> str:
    """``<path>/<workspace>/<experiment>/<job>/<job uid>``: what every output of the job is under (an array's for
    a task of an array)."""
    task = ctx.spec.array_task
    job, uid = (task.job, task.uid) if task is not None else (ctx.job_name, ctx.job_uid)
    return str(PurePath(path, ctx.workspace, ctx.experiment, job, uid))


def output_dir(ctx: JobContext, path: str, suffix: str) -> str:
    """``<path>/<workspace>/<experiment>/<job>/<job uid>/<suffix>`` (DESIGN §7); a task of an array writes in its
    array's, in ``<suffix>/<index>``, so that every task's outputs are under one folder."""
    task = ctx.spec.array_task
    return str(PurePath(output_base(ctx, path), suffix, *([str(task.index)] if task is not None else [])))


def on_node(path: str, paths: dict[str, str]) -> str:
    """``path`` with a mount root's macro (``$CORRAL_JOB_MOUNT_ROOT/data``) resolved on the node whose job
    ``paths`` (:func:`~corral.launch.layout.node_job_paths`) are given."""
    macro = mount_macro(path)
    if macro is None:
        return path
    root, rest = macro
    return str(PurePath(paths[root], rest)) if rest else paths[root]


def twins(variables: dict[str, str]) -> dict[str, str]:
    """``{"X": v}`` -> ``{"CORRAL_X": v, "AZ_BATCHAI_X": v}``."""
    env: dict[str, str] = {}
    for key, value in variables.items():
        env[f"CORRAL_{key}"] = value
        env[f"{TWIN_PREFIX}{key}"] = value
    return env


def node_own_environment(*, workspace: str, cluster: str, node: str, root: str, gpus: Sequence[int]) -> dict[str, str]:
    """What a node's own commands (its setup, ``corral cluster node exec``) see: the node, its mount root, its GPUs."""
    env = twins(
        {
            "WORKSPACE": workspace,
            "CLUSTER": cluster,
            "NODE_NAME": node,
            "MOUNT_ROOT": f"{root}/mounts",
            "NUM_GPUS": str(len(gpus)),
        }
    )
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def node_environment(
    ctx: JobContext, nodes: Sequence[NodeAssignment], rank: int, toolkit: dict[str, str] | None = None
) -> dict[str, str]:
    """Variables every process on node ``rank`` gets: Corral's, then ``toolkit``'s, then the job's env and secrets."""
    node = nodes[rank]
    paths = node_job_paths(node.root, ctx.job_uid)
    spec = ctx.spec
    corral: dict[str, str] = {
        "JOB_ID": ctx.job_uid,
        "JOB_NAME": ctx.job_name,
        "EXPERIMENT": ctx.experiment,
        "WORKSPACE": ctx.workspace,
        "ATTEMPT": str(ctx.attempt),
        "MOUNT_ROOT": paths["mount_root"],
        "JOB_MOUNT_ROOT": paths["job_mount_root"],
        "JOB_TEMP": paths["job_temp"],
        "JOB_TEMP_DIR": paths["job_temp_dir"],
        "SHARED_JOB_TEMP": ctx.layout.shared,
        "STDOUTERR_DIR": ctx.stdouterr_dir,
        "CHECKPOINT_DIR": ctx.layout.checkpoints,
        "NODE_RANK": str(rank),
        "NUM_NODES": str(len(nodes)),
        "NODE_IPS": ",".join(n.ip for n in nodes),
        "MASTER_ADDR": nodes[0].ip,
        "NUM_GPUS": str(len(node.gpus)),
    }
    for item in spec.inputs:
        staged = store_location(item.path) is not None
        corral[f"INPUT_{item.id}"] = str(PurePath(paths["inputs"], item.id)) if staged else on_node(item.path, paths)
    for item in spec.outputs:
        if store_location(item.path) is not None:
            corral[f"OUTPUT_{item.id}"] = str(PurePath(paths["outputs"], item.id))
        else:
            corral[f"OUTPUT_{item.id}"] = output_dir(ctx, on_node(item.path, paths), item.suffix or item.id)
    env = twins(corral)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in node.gpus)
    if ctx.environment is None and ctx.input_cache:  # the machine's Python: corral.runtime, and nothing else
        env["PYTHONPATH"] = f"{ctx.input_cache}/{RUNTIME_FOLDER}"
    if toolkit:
        env.update(toolkit)
    env.update(spec.env)
    env.update(ctx.secrets)
    return env
