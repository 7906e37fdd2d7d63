"""Node setup: ``setup.command`` runs on every node as it joins, before any job.

The node is ``preparing`` meanwhile; it becomes ``idle`` when the command exits 0,
else ``unusable`` with the error, its output in ``<node root>/setup/setup.txt``. It runs in
``<node root>/setup`` (its own folder), as the cluster's creator's Unix account where users have theirs. A setup
runs as a one-process launch plan (``job_uid`` ``setup-<node id>``), so the backend
starts, watches, signals and re-attaches to it after a restart as it does jobs.
"""

from __future__ import annotations

from pathlib import PurePath

from corral.launch.env import node_own_environment
from corral.launch.plan import LaunchPlan, NodePlan, ProcessPlan

PREFIX = "setup-"
LOG_NAME = "setup/setup.txt"


def setup_uid(node_id: int) -> str:
    return f"{PREFIX}{node_id}"


def setup_log(root: str) -> str:
    return str(PurePath(root, LOG_NAME))


def setup_plan(
    *,
    node_id: int,
    node_name: str,
    cluster: str,
    workspace: str,
    gpus: list[int],
    root: str,
    ip: str,
    command: str,
    env: dict[str, str],
    run_as: str | None = None,
) -> LaunchPlan:
    attempt_dir = str(PurePath(root, "setup"))
    variables = {
        **node_own_environment(workspace=workspace, cluster=cluster, node=node_name, root=root, gpus=gpus),
        **env,
    }
    log = setup_log(root)
    process = ProcessPlan(
        rank=0,
        node_rank=0,
        command=command,
        env=variables,
        stdout=log,
        stderr=log,
    )
    node = NodePlan(
        rank=0,
        node_id=node_id,
        node_name=node_name,
        workdir=attempt_dir,
        prepare_command=None,
        prepare_log="",
        processes=(process,),
        ip=ip,
    )
    return LaunchPlan(
        job_uid=setup_uid(node_id),
        attempt=1,
        attempt_dir=attempt_dir,
        shared_dirs=(attempt_dir,),
        nodes=(node,),
        grace_seconds=10.0,
        run_as=run_as,
        owned_dirs=(attempt_dir,),
    )
