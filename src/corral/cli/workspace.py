"""``corral workspace …`` (members included) and ``corral usage``."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import OutputOpt, WorkspaceOpt, client, console, emit, make_table, when
from corral.core.models import Role

app = typer.Typer(help="Workspaces: the tenancy boundary, with members' roles and quotas.", no_args_is_help=True)
member_app = typer.Typer(
    help="Who may do what in a workspace: reader (sees), contributor (submits), owner (manages).",
    no_args_is_help=True,
)
app.add_typer(member_app, name="member")


def _quota(value: int | None) -> str:
    return "-" if value is None else str(value)


@app.command("list")
def list_(output: OutputOpt = "table") -> None:
    """List workspaces with their quotas."""
    spaces = client().list_workspaces()
    rows = [
        (w.name, w.role or "-", _quota(w.quota.max_nodes), _quota(w.quota.max_gpus), when(w.created_at)) for w in spaces
    ]
    emit(spaces, output, make_table(["NAME", "YOUR ROLE", "MAX NODES", "MAX GPUS", "CREATED"], rows))


@app.command("create")
def create(
    name: str,
    owner: Annotated[str | None, typer.Option("--owner", help="A user who owns it (admins only).")] = None,
) -> None:
    """Create a workspace (admins, or users where the server lets them; a user owns what they create)."""
    console.print(client().create_workspace(name, owner=owner).name)


@member_app.command("list")
def member_list(workspace: str, output: OutputOpt = "table") -> None:
    """The workspace's members and their roles (admins hold every right without one)."""
    members = client(workspace).list_members(workspace=workspace)
    emit(members, output, make_table(["USER", "ROLE", "ADDED"], [(m.user, m.role, when(m.added_at)) for m in members]))


@member_app.command("add")
def member_add(
    workspace: str,
    user: str,
    role: Annotated[Role, typer.Option("--role", "-r", help="reader, contributor or owner.")] = "contributor",
) -> None:
    """Give a user a role in the workspace, or change theirs (owners and admins)."""
    m = client(workspace).set_member(user, role, workspace=workspace)
    console.print(f"{m.user} is a {m.role} of {workspace}")


@member_app.command("remove")
def member_remove(workspace: str, user: str) -> None:
    """Take a user's role in the workspace away; their jobs stay (owners and admins)."""
    client(workspace).remove_member(user, workspace=workspace)
    console.print(f"{user} is no longer a member of {workspace}")


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
