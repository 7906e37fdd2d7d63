"""``corral job metrics`` (a command of ``corral job``, registered there): a job's series, one metric's points,
or every point as CSV or JSON lines."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from corral.cli.common import ExperimentOpt, JobNameArg, WorkspaceOpt, client, emit, make_table, when


def _number(value: float) -> str:
    return f"{value:.6g}"


def metrics(
    name: JobNameArg,
    metric: Annotated[str | None, typer.Option("--name", "-n", help="One metric's points (else every series).")] = None,
    rank: Annotated[int, typer.Option("--rank", help="The rank whose points to show.")] = 0,
    attempt: Annotated[int | None, typer.Option("--attempt", help="Default: the latest that has it.")] = None,
    max_points: Annotated[int, typer.Option("--max-points", help="Past this, downsampled.")] = 1000,
    experiment: ExperimentOpt = None,
    workspace: WorkspaceOpt = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table, json or yaml; with --name also csv or jsonl (every point)")
    ] = "table",
) -> None:
    """A job's metrics: its series with their last, min and max; with --name, one metric's points."""
    c = client(workspace, experiment)
    if metric is None:
        if output in ("csv", "jsonl"):
            raise typer.BadParameter("csv and jsonl export one metric: give --name", param_hint="--output")
        series = c.job_metrics(name)
        rows = [
            (s.name, s.attempt, s.rank, s.last_step, _number(s.last_value), _number(s.min), _number(s.max),
             when(s.updated_at))
            for s in series
        ]  # fmt: skip
        emit(series, output, make_table(["NAME", "ATTEMPT", "RANK", "STEP", "LAST", "MIN", "MAX", "UPDATED"], rows))
        return
    if output in ("csv", "jsonl"):
        for chunk in c.export_metric(name, metric, format=output, attempt=attempt):
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        return
    points = c.job_metric(name, metric, rank=rank, attempt=attempt, max_points=max_points)
    lines: list[tuple[object, ...]]
    if points.downsampled:
        headers = ["STEP", "MEAN", "MIN", "MAX", "POINTS"]
        lines = [(p.step, _number(p.value), _number(p.min), _number(p.max), p.count) for p in points.points]
    else:
        headers = ["STEP", "VALUE", "AT"]
        lines = [(p.step, _number(p.value), when(p.at)) for p in points.points]
    title = f"{metric}, rank {points.rank} of attempt {points.attempt}: {points.total} points"
    table = make_table(headers, lines)
    table.title = title + (f" in {len(points.points)} buckets" if points.downsampled else "")
    emit(points, output, table)
