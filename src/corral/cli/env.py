"""``corral env …``: the job environments cached on a cluster's machines (yours: each account has its own)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from corral.cli.common import OutputOpt, WorkspaceOpt, client, console, emit, make_table, size_text, when
from corral.core.errors import CorralError
from corral.core.units import parse_duration

app = typer.Typer(help="Job environments cached on a cluster's machines (docs/environments.md).", no_args_is_help=True)

NodeOpt = Annotated[str, typer.Option("--node", help="The node whose machine to look at (name or index).")]


def on_node(cluster: str, node: str, workspace: str | None, *args: str) -> Any:
    """Run ``python -m corral.envs.build ARGS`` on the node, with the node's own Corral; its JSON answer."""
    command = ["sh", "-c", '"$CORRAL_PYTHON" -E -m corral.envs.build "$@"', "corral-env", *args]
    out: list[str] = []
    err: list[str] = []
    code = "1"
    for stream, line in client(workspace).node_exec(cluster, node, command):
        if stream == "exit":
            code = line
        (out if stream == "stdout" else err).append(line)
    if code != "0":
        raise CorralError(f"on node {node} of {cluster}: " + ("\n".join(err[-5:]) or f"exit code {code}"))
    return json.loads("\n".join(out))


@app.command("list")
def list_(cluster: str, node: NodeOpt = "0", workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """Your environments on the machine of a cluster's node: hash, interpreter, packages, size, last use."""
    found = on_node(cluster, node, workspace, "list")
    rows = [
        (
            e["hash"][:12],
            e["interpreter"].split()[-1] if e["interpreter"] else "",
            ", ".join(e["packages"]) + (f" -r {e['requirements']}" if e["requirements"] else ""),
            size_text(e["size"]),
            when(datetime.fromtimestamp(e["last_used"], UTC)),
        )
        for e in found
    ]
    emit(found, output, make_table(["HASH", "PYTHON", "PACKAGES", "SIZE", "LAST USED"], rows))


@app.command("show")
def show(cluster: str, environment: str, node: NodeOpt = "0", workspace: WorkspaceOpt = None) -> None:
    """One environment (by its hash, or the start of it)."""
    found = [e for e in on_node(cluster, node, workspace, "list") if e["hash"].startswith(environment)]
    if len(found) != 1:
        raise CorralError(f"{len(found)} environments on that machine start with {environment!r}")
    console.print_json(json.dumps(found[0]))


@app.command("prune")
def prune(
    cluster: str,
    older_than: Annotated[str, typer.Option("--older-than", help="Unused for at least this long (7d, 12h).")] = "7d",
    node: NodeOpt = "0",
    workspace: WorkspaceOpt = None,
) -> None:
    """Remove your environments that no job has used for a while on that machine (none being built)."""
    removed = on_node(cluster, node, workspace, "prune", str(parse_duration(older_than)))
    console.print(
        f"removed {len(removed)} environments" + (f": {', '.join(h[:12] for h in removed)}" if removed else "")
    )
