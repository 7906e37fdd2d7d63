"""``corral cluster …`` and ``corral cluster node …``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import (
    ClusterNameArg,
    OutputOpt,
    WorkspaceOpt,
    YesOpt,
    client,
    confirm,
    console,
    emit,
    err_console,
    make_table,
    when,
)

app = typer.Typer(help="Clusters: pools of nodes.", no_args_is_help=True)
node_app = typer.Typer(help="The nodes of a cluster.", no_args_is_help=True)
app.add_typer(node_app, name="node")


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Cluster spec (YAML or JSON).")],
    workspace: WorkspaceOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Create a cluster from a spec file."""
    cluster = client(workspace).create_cluster(file)
    for warning in cluster.warnings:
        err_console.print(f"warning: {warning}")
    if output == "json":
        emit(cluster, output)
    else:
        console.print(cluster.name)


@app.command("list")
def list_(workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """List clusters."""
    clusters = client(workspace).list_clusters()
    rows = [
        (
            c.name,
            c.spec.backend if c.spec else "?",  # its stored spec does not load: `cluster show` says why
            c.allocation_state,
            c.current_nodes,
            c.node_counts.idle,
            c.node_counts.running,
        )
        for c in clusters
    ]
    emit(clusters, output, make_table(["NAME", "BACKEND", "ALLOCATION", "NODES", "IDLE", "RUNNING"], rows))


@app.command("show")
def show(name: ClusterNameArg, workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """Show a cluster: its spec and node counts."""
    c = client(workspace).get_cluster(name)
    counts = c.node_counts
    rows = [
        ("name", c.name),
        ("backend", c.spec.backend if c.spec else "?"),
        ("node", f"{c.spec.node.cpus} cpus, {c.spec.node.gpus} gpus" if c.spec else "?"),
        ("allocation", c.allocation_state),
        ("nodes", f"{c.current_nodes} (target {c.target_nodes})"),
        ("node states", ", ".join(f"{k} {v}" for k, v in counts.model_dump().items())),
        ("created", when(c.created_at)),
        *(("warning", w) for w in c.warnings),
    ]
    emit(c, output, make_table(["FIELD", "VALUE"], rows))


@app.command("resize")
def resize(
    name: ClusterNameArg,
    nodes: Annotated[int, typer.Option("--nodes", min=0, help="The node count to reach.")],
    deallocation: Annotated[
        str | None,
        typer.Option("--deallocation", help="What a shrink does to running jobs: requeue, terminate or wait."),
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Grow or shrink a cluster (manual scale); `cluster show` follows it to steady."""
    c = client(workspace).resize_cluster(name, nodes, deallocation=deallocation)
    console.print(f"{c.name}: {c.current_nodes} nodes, target {c.target_nodes} ({c.allocation_state})")


@app.command("autoscale")
def autoscale(
    name: ClusterNameArg,
    min_nodes: Annotated[int, typer.Option("--min", min=0, help="Fewest nodes (0: none while idle).")] = 0,
    max_nodes: Annotated[int, typer.Option("--max", min=1, help="Most nodes.")] = 1,
    idle_timeout: Annotated[
        str | None, typer.Option("--idle-timeout", help="Remove nodes idle this long (e.g. 10m; default 10m).")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Scale a cluster with its queue: grow for waiting jobs, shrink idle nodes, within --min and --max."""
    c = client(workspace).autoscale_cluster(name, min_nodes=min_nodes, max_nodes=max_nodes, idle_timeout=idle_timeout)
    console.print(f"{c.name}: {c.current_nodes} nodes, {min_nodes} to {max_nodes} ({c.allocation_state})")


@app.command("delete")
def delete(
    name: ClusterNameArg,
    yes: YesOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Delete a cluster that runs no job, with its nodes' directories (it asks first, unless --yes)."""
    c = client(workspace)
    if not yes:
        nodes = c.get_cluster(name).current_nodes
        confirm(f"Delete cluster {name!r} and its {nodes} nodes?")
    c.delete_cluster(name)
    console.print(f"deleted cluster {name}")


@node_app.command("list")
def node_list(cluster: ClusterNameArg, workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """List the nodes of a cluster."""
    c = client(workspace)
    nodes = c.list_nodes(cluster)
    spec = c.get_cluster(cluster).spec  # None: its stored spec does not load (`cluster show` says why)
    cpus = spec.node.cpus if spec else "?"
    memory = "?" if spec is None else f"{spec.node.memory / 2**30:g} GiB" if spec.node.memory else "-"
    rows = [
        (
            n.name,
            n.state.value,
            n.ip,
            cpus,
            f"{len(n.gpus)} ({','.join(map(str, n.gpus))})" if n.gpus else "0",
            memory,
            n.job,
            n.experiment,
            n.error,
        )
        for n in nodes
    ]
    headers = ["NAME", "STATE", "IP", "CPUS", "GPUS", "MEMORY", "JOB", "EXPERIMENT", "ERROR"]
    emit(nodes, output, make_table(headers, rows))


@node_app.command("logs")
def node_logs(cluster: ClusterNameArg, node: str, workspace: WorkspaceOpt = None) -> None:
    """Print the output of a node's setup.command."""
    sys.stdout.write(client(workspace).node_logs(cluster, node))


@node_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def node_exec(
    cluster: ClusterNameArg,
    node: Annotated[str, typer.Argument(help="The node's name (node-0) or index (0).")],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Run a command in a node's environment (its GPUs, its mounts) and stream its output; exit with its code."""
    code = 1
    for stream, line in client(workspace).node_exec(cluster, node, command):
        if stream == "exit":
            code = int(line)
        else:
            print(line, file=sys.stderr if stream == "stderr" else sys.stdout, flush=True)
    raise typer.Exit(code)


@node_app.command("preempt")
def node_preempt(cluster: ClusterNameArg, node: str, workspace: WorkspaceOpt = None) -> None:
    """Preempt a node of a low-priority cluster now, to rehearse it: notice to its job, grace, eviction."""
    n = client(workspace).preempt_node(cluster, node)
    console.print(f"preempting {n.name} of {cluster}" + (f" (job {n.job})" if n.job else ""))


@node_app.command("recover")
def node_recover(cluster: ClusterNameArg, node: str, workspace: WorkspaceOpt = None) -> None:
    """Return an unusable node (lost, or its setup failed) to service."""
    n = client(workspace).recover_node(cluster, node)
    console.print(f"{n.name}: {n.state.value}")
