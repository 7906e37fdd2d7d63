"""What every planner shares: turning a list of processes into a :class:`LaunchPlan`."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

from corral.core.specs import mount_macro, param_text, store_location
from corral.launch.env import node_environment, on_node, output_dir
from corral.launch.layout import ENVIRONMENT_DONE, ENVIRONMENT_LINK, JOB_FILES, METRICS_VARIABLE, node_job_paths
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment, NodePlan, ProcessPlan


@dataclass(frozen=True)
class Proc:
    """One process a planner wants: where it runs, what it runs, with which environment."""

    rank: int
    node_rank: int
    command: str
    env: dict[str, str]
    #: A launcher (mpirun): both streams go to the attempt's launcher log, not to the rank's.
    launcher: bool = False
    sweep_session: bool = False


#: The variable that tells ``corral.data.stage`` what to stage (it holds the stores' credentials: only the
#: prepare step gets it, never the job's processes).
STAGE_VARIABLE = "CORRAL_STAGE_INPUTS"
#: Run by the node's own Corral (``CORRAL_PYTHON``: the interpreter the node's backend runs; ``-E``: not the job's
#: PYTHONPATH, which may hold only corral.runtime).
STAGE_COMMAND = '"${CORRAL_PYTHON:-python3}" -E -m corral.data.stage'
UPLOAD_VARIABLE = "CORRAL_UPLOAD_OUTPUTS"
UPLOAD_COMMAND = '"${CORRAL_PYTHON:-python3}" -E -m corral.data.upload'


def stage_order(ctx: JobContext, paths: dict[str, str], dirs: list[str]) -> str:
    """What ``corral.data.stage`` stages on one node (``paths``: the job's on that node), each linked where the
    job finds it: an input in the job's inputs folder, a mount under its root; and the folders it makes once the
    mounts are there (``dirs``: outputs under a mount root)."""
    inputs = []
    for index, item in enumerate(ctx.staged_inputs):
        at = PurePath(paths[item["at"][0]], item["at"][1]) if "at" in item else PurePath(paths["inputs"], item["id"])
        inputs.append({**item, "link": str(at), **({"record": fuse_record(paths, index)} if is_fuse(item) else {})})
    return json.dumps({"cache": ctx.input_cache, "limit": ctx.input_cache_limit, "inputs": inputs, "dirs": dirs})


#: ``corral.envs.build``: the job's environment, built with uv (or found in the machine's cache).
ENVIRONMENT_VARIABLE = "CORRAL_ENVIRONMENT"
#: Where the environment step writes its log (``NodePlan.environment_log``, or the backend's copy of it).
LOG_VARIABLE = "CORRAL_ENVIRONMENT_LOG"
ENVIRONMENT_COMMAND = '"${CORRAL_PYTHON:-python3}" -E -m corral.envs.build'


def environment_order(ctx: JobContext, paths: dict[str, str]) -> str:
    """What ``corral.envs.build`` builds on one node, and where the job's processes find it."""
    assert ctx.environment is not None
    spec = dict(ctx.environment)
    if spec.get("requirements"):  # a file of the job's code, in its working directory
        spec["requirements"] = str(PurePath(paths["job_temp"], spec["requirements"]))
    order = {"spec": spec, "cache": ctx.input_cache, "link": paths["environment"], "limit": ctx.input_cache_limit}
    return json.dumps({**order, "shortcut": spec_hash(ctx)})


def spec_hash(ctx: JobContext) -> str:
    """What names a job's environment before the node looks: its spec, and its code (the requirements file's)."""
    what = {"spec": ctx.environment, "code": ctx.code_archive if (ctx.environment or {}).get("requirements") else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def environment_step(ctx: JobContext) -> str:
    """The prepare's environment step: the link to the environment last found for this spec on this machine,
    made by the shell where it is complete (no Python started: 30 ms less per job), else ``corral.envs.build``."""
    pointer = f'{shlex.quote(ctx.input_cache)}/"$(id -u)"/envs/spec-{spec_hash(ctx)}'
    link = f'"$CORRAL_JOB_TEMP/{ENVIRONMENT_LINK}"'
    return (
        f'p={pointer}; if [ -f "$p/.corral-complete" ] && [ -x "$p/bin/python" ]; then '
        f'mkdir -p "$CORRAL_JOB_TEMP/{JOB_FILES}" && ln -sfn "$(readlink -f "$p")" {link} && touch -c "$p/" && '
        f'echo "{ENVIRONMENT_DONE}: cached (linked by the shell)"; '
        f"else {ENVIRONMENT_COMMAND}; fi"
    )


def in_environment(ctx: JobContext, command: str) -> str:
    """``command`` run in the job's environment (its ``bin`` first on PATH): the shell resolves the link on the
    node, so one command serves every node."""
    if not ctx.environment:
        return command
    if ctx.environment.get("server"):  # Corral's own virtualenv, as jobs had it before environments
        return f'PATH="${{CORRAL_PYTHON%/*}}:$PATH"; {command}'
    return f'export VIRTUAL_ENV="$CORRAL_JOB_TEMP/{ENVIRONMENT_LINK}"; PATH="$VIRTUAL_ENV/bin:$PATH"; {command}'


def is_fuse(item: dict[str, Any]) -> bool:
    return item.get("mode") == "mount"


def fuse_record(paths: dict[str, str], index: int) -> str:
    """Where the staging notes how to reach the rclone of the job's ``index``-th staged item (a FUSE mount)."""
    return str(PurePath(paths["job_temp"], JOB_FILES, "fuse", f"{index}.json"))


def staged_secrets(ctx: JobContext) -> list[str]:
    """The credentials in the staging order: masked wherever a log shows them."""
    found = []
    for item in (*ctx.staged_inputs, *ctx.staged_outputs):
        options = item["store"]["options"]
        for key in ("key", "secret", "token", "connection_string"):
            if isinstance(options.get(key), str) and options[key]:
                found.append(options[key])
        connection = options.get("connection_string", "")
        found += [p.split("=", 1)[1] for p in connection.split(";") if p.startswith(("AccountKey=", "SharedAccess"))]
    return found


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
    layout, logs = ctx.layout, ctx.stdouterr_dir
    by_node: list[list[ProcessPlan]] = [[] for _ in nodes]
    extra = dict((ctx.environment or {}).get("env_vars") or {})
    files = list(files)
    if spec.params:  # a sweep's trial: each parameter, and all of them in a JSON file
        params_file = layout.params(ctx.attempt)
        files.append((params_file, json.dumps(spec.params)))
        extra |= {f"CORRAL_PARAM_{name.upper()}": param_text(v) for name, v in spec.params.items()}
        extra["CORRAL_PARAMS_FILE"] = params_file
    task = spec.array_task
    if task is not None:  # a task of an array: its index, and its items in a file
        items_file = layout.array_items(ctx.attempt)
        files.append((items_file, json.dumps(task.items)))
        extra |= {"CORRAL_ARRAY_INDEX": str(task.index), "CORRAL_ARRAY_COUNT": str(task.count),
                  "CORRAL_ARRAY_JOB": task.job, "CORRAL_ARRAY_ITEMS_FILE": items_file}  # fmt: skip
    for proc in procs:
        if proc.launcher:
            stdout = stderr = layout.log(ctx.attempt, "mpirun", proc.rank)
        else:
            stdout = layout.log(ctx.attempt, "stdout", proc.rank)
            stderr = layout.log(ctx.attempt, "stderr", proc.rank)
        by_node[proc.node_rank].append(
            ProcessPlan(
                rank=proc.rank,
                node_rank=proc.node_rank,
                command=in_environment(ctx, proc.command),
                env={**extra, **proc.env, METRICS_VARIABLE: layout.metrics(ctx.attempt, proc.rank)},
                stdout=stdout,
                stderr=stderr,
                sweep_session=proc.sweep_session,
            )
        )
    prepare = spec.prepare.command if spec.prepare else None
    # Outputs under a mount root ($CORRAL_MOUNT_ROOT/...): their folders are made on the node once mounts are there.
    under_mounts = [o for o in spec.outputs if store_location(o.path) is None and mount_macro(o.path)]
    staging = bool(ctx.staged_inputs or under_mounts)
    # The inputs and mounts first, then the environment (whose wheels may be an input), then the job's own prepare
    # (which may read them, in the environment).
    built = bool(ctx.environment) and not (ctx.environment or {}).get("server")
    # The environment's own log (``--stream environment``), apart from the prepare's.
    steps = [STAGE_COMMAND] * staging
    if built:
        steps.append(f'{{ {environment_step(ctx)}; }} >> "${LOG_VARIABLE}" 2>&1')
    if steps:
        own = f" && {{\n{in_environment(ctx, prepare)}\n}}" if prepare else ""
        prepare = " && ".join(steps) + own
    elif prepare:  # the job's own prepare alone: in its environment too
        prepare = in_environment(ctx, prepare)
    node_list = list(nodes)
    node_paths = [node_job_paths(node.root, ctx.job_uid) for node in node_list]
    node_plans = []
    for rank, node in enumerate(node_list):
        processes = sorted(by_node[rank], key=lambda p: p.rank)
        paths = node_paths[rank]
        prepare_env = node_environment(ctx, node_list, rank) if prepare else {}
        if staging:
            dirs = [output_dir(ctx, on_node(o.path, paths), o.suffix or o.id) for o in under_mounts]
            prepare_env[STAGE_VARIABLE] = stage_order(ctx, paths, dirs)
        environment_log = layout.log(ctx.attempt, "environment", rank) if built else None
        if built:
            prepare_env[ENVIRONMENT_VARIABLE] = environment_order(ctx, paths)
            prepare_env[LOG_VARIABLE] = str(environment_log)
        node_plans.append(
            NodePlan(
                rank=rank,
                node_id=node.node_id,
                node_name=node.name,
                workdir=paths["job_temp"],
                prepare_command=prepare,
                prepare_log=layout.log(ctx.attempt, "prepare", rank),
                processes=tuple(processes),
                prepare_env=prepare_env,
                code_archive=ctx.code_archive,
                ip=node.ip,
                environment_log=environment_log,
            )
        )
    #: The folders the job writes besides its own: its outputs, and on the nodes those of its volumes.
    writes = [output_dir(ctx, o.path, o.suffix or o.id) for o in spec.outputs if o.path.startswith("/")]
    # An output going to a volume is a folder of each node's own disk until it is uploaded.
    staged_ids = [item["id"] for item in ctx.staged_outputs]
    writes += [str(PurePath(paths["outputs"], i)) for paths in node_paths for i in staged_ids]
    roots = {item["at"][0] for item in ctx.staged_inputs if "at" in item}
    roots |= {macro[0] for o in under_mounts if (macro := mount_macro(o.path))}
    if "mount_root" in roots:  # the cluster's mounts' root: the job's account makes links and folders in it
        writes += [paths["mount_root"] for paths in node_paths]
    shared = [ctx.attempt_dir, logs, layout.shared, layout.checkpoints, *writes, *extra_dirs]
    return LaunchPlan(
        job_uid=ctx.job_uid,
        attempt=ctx.attempt,
        attempt_dir=ctx.attempt_dir,
        shared_dirs=tuple(shared),
        nodes=tuple(node_plans),
        grace_seconds=spec.limits.termination_grace,
        secret_values=(*(v for v in ctx.secrets.values() if v), *staged_secrets(ctx)),
        files=tuple(files),
        ports=ctx.ports,
        checkpoint_dir=layout.checkpoints,
        run_as=ctx.run_as,
        owned_dirs=(ctx.job_dir, *(n.workdir for n in node_plans), *writes),
        upload=upload_plan(ctx, node_plans, node_list)
        if ctx.staged_outputs or any(map(is_fuse, ctx.staged_inputs))
        else None,
    )


def upload_plan(ctx: JobContext, node_plans: Sequence[NodePlan], nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    """One process per node that writes its FUSE mounts back and unmounts them, then uploads what the node's
    processes wrote to the job's outputs on volumes (run once they have all exited 0). Its records are
    ``<attempt dir>/upload``; its logs ``upload-<node rank>.txt``, and the manifest of what it uploaded (one JSON
    line per file) ``upload-manifest-<node rank>.jsonl``."""
    layout, attempt_dir = ctx.layout, str(PurePath(ctx.attempt_dir, "upload"))
    suffix = {o.id: o.suffix or o.id for o in ctx.spec.outputs}
    plans = []
    for node, plan in zip(nodes, node_plans, strict=True):
        paths = node_job_paths(node.root, ctx.job_uid)
        # Each output goes to the job's own folder under its path in the volume, as a local output does.
        order = [
            {
                **item,
                "local": str(PurePath(paths["outputs"], item["id"])),
                "path": output_dir(ctx, item["path"], suffix[item["id"]]),
            }
            for item in ctx.staged_outputs
        ]
        mounts = [fuse_record(paths, i) for i, item in enumerate(ctx.staged_inputs) if is_fuse(item)]
        finish = {"outputs": order, "unmount": mounts}
        env = {**node_environment(ctx, nodes, plan.rank), UPLOAD_VARIABLE: json.dumps(finish)}
        process = ProcessPlan(
            rank=plan.rank,
            node_rank=plan.rank,
            command=UPLOAD_COMMAND,
            env=env,
            stdout=layout.upload_manifest(ctx.attempt, plan.rank),
            stderr=layout.log(ctx.attempt, "upload", plan.rank),
        )
        plans.append(replace(plan, prepare_command=None, prepare_env={}, code_archive=None, processes=(process,)))
    return LaunchPlan(
        job_uid=ctx.job_uid,
        attempt=-ctx.attempt,
        attempt_dir=attempt_dir,
        shared_dirs=(attempt_dir,),
        nodes=tuple(plans),
        grace_seconds=ctx.spec.limits.termination_grace,
        secret_values=tuple(staged_secrets(ctx)),
        run_as=ctx.run_as,
        owned_dirs=(attempt_dir,),
    )


#: Sync ``n`` of attempt ``a`` (``outputs[].sync_every``) runs as attempt ``-(a + n * SYNC_STEP)``: its reports
#: come back apart from the final upload's (``-a``).
SYNC_STEP = 1_000_000


def sync_plan(upload: LaunchPlan, number: int) -> LaunchPlan:
    """The upload plan run while the job runs, the ``number``-th time (records of its own; logs appended)."""
    attempt_dir = f"{upload.attempt_dir}-sync-{number}"
    return replace(
        upload, attempt=upload.attempt - number * SYNC_STEP, attempt_dir=attempt_dir, shared_dirs=(attempt_dir,),
        owned_dirs=(attempt_dir,),
    )  # fmt: skip


def upload_number(attempt: int) -> tuple[int, int]:
    """The attempt an upload plan's (negative) ``attempt`` belongs to, and its sync's number (0: the final)."""
    return -attempt % SYNC_STEP, -attempt // SYNC_STEP
