"""Toolkits started by OpenMPI's ``mpirun``: ``mpi``, ``horovod``, ``chainer``, ``cntk``
(and ``pytorch`` with ``backend: mpi``).

The job's first node runs one process, ``mpirun``, with a hostfile of the job's
nodes (``CORRAL_MPI_HOST_FILE``); mpirun starts every rank. Each rank starts under
a small shell shim that sends its output to ``stdout-<rank>.txt``/``stderr-<rank>.txt``
and, when it fails, records ``<rank> <exit code>`` in the attempt's ``first-failure``
file (created exclusively: the first failure wins), so the job's error names it.
mpirun's own messages go to ``mpirun.txt``.

Every Corral variable, the job's ``env`` and ``secrets`` (by name: values never
appear on a command line) and ``PATH`` are forwarded to every rank with ``-x``;
Batch AI lost them on remote ranks. Running as root is allowed
(``OMPI_ALLOW_RUN_AS_ROOT``): where the node runs jobs as root, so does mpirun.

Virtual nodes that share an address (the local backend's, all 127.0.0.1) share one
hostfile line, ``localhost slots=N``: OpenMPI fails on a second line for the same
machine. Their ranks see the GPUs of all the job's nodes, in node order, so a rank
picks its own with ``OMPI_COMM_WORLD_LOCAL_RANK`` (as Horovod does).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

from corral.launch.common import Proc, build_plan, python_command
from corral.launch.env import TWIN_PREFIX, node_environment, twins
from corral.launch.layout import FIRST_FAILURE
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment

if TYPE_CHECKING:
    from corral.core.specs import JobSpec

LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")

#: argv: logs dir, attempt dir, command.
RANK_SHIM = r"""_corral_r=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-0}}
exec >> "$1/stdout-$_corral_r.txt" 2>> "$1/stderr-$_corral_r.txt" < /dev/null
_corral_c=$3 _corral_f=$2/first-failure
shift 3
( eval "$_corral_c" )
_corral_rc=$?
[ "$_corral_rc" -eq 0 ] || { (set -C; printf '%s %s\n' "$_corral_r" "$_corral_rc" > "$_corral_f") 2>/dev/null; }
exit "$_corral_rc"
"""
assert FIRST_FAILURE in RANK_SHIM


def slots(processes: int, node_count: int) -> list[int]:
    """Ranks per node: as even as can be, the first nodes taking the remainder."""
    base, extra = divmod(processes, node_count)
    return [base + (1 if i < extra else 0) for i in range(node_count)]


def hostfile(nodes: Sequence[NodeAssignment], processes: int) -> str:
    per_host: dict[str, int] = {}
    for node, count in zip(nodes, slots(processes, len(nodes)), strict=True):
        host = "localhost" if node.ip in LOCAL_ADDRESSES else node.ip
        if count:
            per_host[host] = per_host.get(host, 0) + count
    return "".join(f"{host} slots={count}\n" for host, count in per_host.items())


def plan_mpi_command(
    ctx: JobContext,
    nodes: Sequence[NodeAssignment],
    command: str,
    processes: int,
    toolkit_vars: dict[str, str] | None = None,
) -> LaunchPlan:
    """One mpirun on the first node starting ``processes`` ranks of ``command`` (shell text)."""
    node_list = list(nodes)
    hosts_path = str(PurePath(ctx.attempt_dir, "hostfile"))
    extra = twins({"MPI_HOST_FILE": hosts_path, **(toolkit_vars or {})})
    virtual = len({n.ip for n in node_list}) == 1
    if virtual and len(node_list) > 1:
        extra["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for n in node_list for g in n.gpus)
    env = node_environment(ctx, node_list, 0, extra)
    forwarded = sorted(
        name for name in env if name.startswith(("CORRAL_", TWIN_PREFIX)) or name in ctx.spec.env or name in ctx.secrets
    )
    forwarded += ["PATH", "CUDA_VISIBLE_DEVICES"] if virtual else ["PATH"]
    argv = ["mpirun", "--hostfile", hosts_path, "-np", str(processes), "--bind-to", "none"]
    for name in forwarded:
        argv += ["-x", name]
    argv += ["/bin/sh", "-c", RANK_SHIM, "corral-rank", ctx.stdouterr_dir, ctx.attempt_dir, command]
    env = {**env, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    launcher = Proc(0, 0, shlex.join(argv), env, launcher=True, sweep_session=True)
    return build_plan(ctx, node_list, [launcher], files=[(hosts_path, hostfile(node_list, processes))])


def total_gpus(nodes: Sequence[NodeAssignment]) -> int:
    return sum(len(n.gpus) for n in nodes)


def mpi_processes(spec: JobSpec, node_count: int, gpus_per_node: int) -> int:
    """Ranks of an MPI-family job: ``processes``, else one per GPU (horovod, chainer), else one per node."""
    tk = getattr(spec, spec.toolkit)
    if tk.processes:
        return int(tk.processes)
    if spec.toolkit in ("horovod", "chainer") and gpus_per_node:
        return node_count * gpus_per_node
    return node_count


def plan_mpi(ctx: JobContext, nodes: Sequence[NodeAssignment]) -> LaunchPlan:
    spec = ctx.spec
    tk = getattr(spec, spec.toolkit)
    if spec.toolkit == "mpi":
        command = tk.command
    elif spec.toolkit == "cntk" and tk.language == "brainscript":
        command = " ".join(part for part in ("cntk", f"configFile={tk.config_file}", tk.args) if part)
    else:
        command = python_command(tk.interpreter, tk.script, tk.args)
    processes = mpi_processes(spec, len(nodes), len(nodes[0].gpus))
    return plan_mpi_command(ctx, nodes, command, processes)
