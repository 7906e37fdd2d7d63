"""``corral workspace …`` and ``corral usage``."""

from __future__ import annotations

import typer

from corral.cli.common import OutputOpt, WorkspaceOpt, client, console, emit, make_table, when

app = typer.Typer(help="Workspaces: the tenancy boundary, with quotas.", no_args_is_help=True)


def _quota(value: int | None) -> str:
    return "-" if value is None else str(value)


@app.command("list")
def list_(output: OutputOpt = "table") -> None:
    """List workspaces with their quotas."""
    spaces = client().list_workspaces()
    rows = [(w.name, _quota(w.quota.max_nodes), _quota(w.quota.max_gpus), when(w.created_at)) for w in spaces]
    emit(spaces, output, make_table(["NAME", "MAX NODES", "MAX GPUS", "CREATED"], rows))


@app.command("create")
def create(name: str) -> None:
    """Create a workspace."""
    console.print(client().create_workspace(name).name)


@app.command("quota")
def quota(
    name: str,
    nodes: int | None = typer.Option(None, "--nodes", min=0, help="Nodes in use at once (omit: no limit)."),
    gpus: int | None = typer.Option(None, "--gpus", min=0, help="GPUs in use at once (omit: no limit)."),
) -> None:
    """Set a workspace's quota; a job over it waits with reason Quota (admins only)."""
    w = client(name).set_quota(max_nodes=nodes, max_gpus=gpus, workspace=name)
    console.print(f"{w.name}: max nodes {_quota(w.quota.max_nodes)}, max gpus {_quota(w.quota.max_gpus)}")


def usage(workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """Node-hours and GPU-hours per user and per experiment (running jobs up to now)."""
    u = client(workspace).usage()
    if output == "json":
        emit(u, output, None)
        return
    for title, rows in (("USER", u.by_user), ("EXPERIMENT", u.by_experiment)):
        table = [(r.name, f"{r.node_hours:.3f}", f"{r.gpu_hours:.3f}", r.jobs) for r in rows]
        console.print(make_table([title, "NODE-HOURS", "GPU-HOURS", "JOBS"], table))
