"""``corral experiment …``."""

from __future__ import annotations

import typer

from corral.cli.common import OutputOpt, WorkspaceOpt, YesOpt, client, confirm, console, emit, make_table, when

app = typer.Typer(help="Experiments: named groups of jobs.", no_args_is_help=True)


@app.command("create")
def create(name: str, workspace: WorkspaceOpt = None) -> None:
    """Create an experiment."""
    console.print(client(workspace).create_experiment(name).name)


@app.command("list")
def list_(workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """List experiments with their job counts."""
    experiments = client(workspace).list_experiments()
    rows = [
        (
            e.name,
            sum(e.job_counts.values()),
            ", ".join(f"{k} {v}" for k, v in sorted(e.job_counts.items())),
            when(e.created_at),
        )
        for e in experiments
    ]
    emit(experiments, output, make_table(["NAME", "JOBS", "STATES", "CREATED"], rows))


@app.command("delete")
def delete(
    name: str,
    yes: YesOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Delete an experiment, its finished jobs and their logs (it asks first, unless --yes)."""
    c = client(workspace)
    if not yes:
        jobs = sum(c.get_experiment(name).job_counts.values())
        confirm(f"Delete experiment {name!r} with its {jobs} jobs and their logs?")
    c.delete_experiment(name)
    console.print(f"deleted experiment {name}")
