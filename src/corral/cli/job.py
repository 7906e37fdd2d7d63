"""``corral job …``."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from corral.cli import metrics
from corral.cli.common import (
    ExperimentOpt,
    JobNameArg,
    OutputOpt,
    WorkspaceOpt,
    YesOpt,
    client,
    confirm,
    console,
    emit,
    err_console,
    make_table,
    transfer_progress,
    when,
)
from corral.client.client import Client
from corral.core.errors import NotFound
from corral.core.models import ArrayStatus, Job
from corral.core.states import JobState

app = typer.Typer(help="Jobs: submit, watch, read logs and outputs.", no_args_is_help=True)
#: What ``job wait`` exits with when the job does not exist (a failed job exits with its code, or 1).
NOT_FOUND_EXIT = 4


def exit_status(job: Job) -> int:
    """What ``job wait`` exits with: 0 for success, the job's code (or 1) otherwise."""
    if job.state == JobState.SUCCEEDED:
        return 0
    if job.exit_code is not None and 0 < job.exit_code < 256:
        return job.exit_code
    return 1


def _follow(
    c: Client,
    name: str,
    *,
    ranks: str = "all",
    streams: str = "stdout,stderr",
    experiment: str | None = None,
    attempt: int | None = None,
    tail: int | None = None,
) -> Job:
    """Print the job's state changes (to stderr) and its ranks' lines as they come, ``[rank node]`` before
    each when several ranks are followed; on the end, a closing line (and the failing rank's last stderr)."""
    prefixed = False
    placed: tuple[int | None, list[str]] | None = None  # the attempt and nodes last said
    try:
        events = c.follow_job(name, ranks=ranks, streams=streams, experiment=experiment, attempt=attempt, tail=tail)
        for event in events:
            if event.kind == "state":
                prefixed = len(event.ranks) > 1
                if event.nodes and event.state != "running" and placed != (event.attempt, event.nodes):
                    # Not seen running (it ran between two looks, or before the follow began): say where it ran.
                    err_console.print(f"ran on {', '.join(event.nodes)} (attempt {event.attempt})", highlight=False)
                if event.nodes:
                    placed = (event.attempt, event.nodes)
            if event.kind == "log":
                out = sys.stderr if event.stream == "stderr" else sys.stdout
                prefix = f"[{event.rank}{' ' + event.node if event.node else ''}] " if prefixed else ""
                out.write("".join(f"{prefix}{line}\n" for line in event.lines))
                out.flush()
            elif event.kind == "state" and event.state == "queued":
                err_console.print(f"queued: {event.reason or 'waiting for the control loop'}", highlight=False)
            elif event.kind == "state" and event.state == "running" and event.nodes:
                err_console.print(f"running on {', '.join(event.nodes)} (attempt {event.attempt})", highlight=False)
            elif event.kind == "state" and event.state == "terminating":
                err_console.print("terminating", highlight=False)
            elif event.kind == "attempt":
                err_console.print(f"attempt {event.attempt} starts", highlight=False)
    except KeyboardInterrupt:
        err_console.print(
            f"\nstopped following; job {name} goes on. Follow it again: corral job logs {name} -f; "
            f"stop it: corral job terminate {name}",
            highlight=False,
        )
        raise typer.Exit(130) from None
    job = c.get_job(name, experiment=experiment)
    _describe_end(c, job)
    return job


def _describe_end(c: Client, job: Job) -> None:
    took = f" in {(job.ended_at - job.started_at).total_seconds():.1f} s" if job.ended_at and job.started_at else ""
    if job.state == JobState.SUCCEEDED:
        err_console.print(f"{job.name} succeeded{took}", highlight=False)
        return
    reason = f": {job.error.code}: {job.error.message}" if job.error else ""
    err_console.print(f"{job.name} {job.state.value}{took}{reason}", highlight=False)
    failing = re.search(r"\brank (\d+)\b", job.error.message if job.error else "")
    if failing and job.state == JobState.FAILED:
        rank = int(failing.group(1))
        last = c.job_logs(job.name, rank=rank, stream="stderr", tail=10, experiment=job.experiment)
        if last.strip():
            err_console.print(f"last lines of rank {rank}'s stderr:", highlight=False)
            sys.stderr.write(last if last.endswith("\n") else last + "\n")


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Job spec (YAML or JSON).")],
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Experiment (else the spec's).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job name (else the spec's, else generated).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end; exit with its code.")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Stream every rank's logs until the job ends.")] = False,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="A variable for the job, NAME=VALUE (repeat it).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything a submission checks; submit nothing.")
    ] = False,
    array: Annotated[
        str | None, typer.Option("--array", help="Many tasks of it: 0-99 (indexes), with %10 at most 10 at once.")
    ] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Submit a job; prints its name."""
    c = client(workspace)
    tasks = _array(array) if array else None
    with transfer_progress("uploading code") as progress:
        job: Job = c.create_job(file, experiment=experiment, name=name, env=_variables(env or []), dry_run=dry_run,
                                progress=progress, array=tasks)  # fmt: skip
    if dry_run:
        console.print(f"valid: job {job.name} ({job.toolkit}, {job.node_count} nodes, {job.rank_count} ranks) "
                      f"would queue on cluster {job.cluster} in experiment {job.experiment}")  # fmt: skip
        return
    console.print(job.name)
    if follow:
        job = _follow(c, job.name, experiment=job.experiment)
    elif wait:
        job = c.wait_job(job.name, experiment=job.experiment)
        _describe_end(c, job)
    else:
        return
    raise typer.Exit(exit_status(job))


def _array(text: str) -> dict[str, int]:
    """``0-99%10`` (or ``100%10``, ``0-99``): 100 tasks, at most 10 queued or running at once."""
    found = re.fullmatch(r"(?:0-(\d+)|(\d+))(?:%(\d+))?", text.strip())
    if found is None:
        raise typer.BadParameter(f"expected 0-LAST[%PARALLEL] (indexes start at 0) or COUNT, got {text!r}",
                                 param_hint="--array")  # fmt: skip
    count = int(found[1]) + 1 if found[1] is not None else int(found[2])
    return {"count": count, **({"parallelism": int(found[3])} if found[3] else {})}


def _variables(pairs: list[str]) -> dict[str, str]:
    variables = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--env")
        variables[key] = value
    return variables


@app.command("validate")
def validate(
    file: Annotated[Path, typer.Option("--file", "-f", help="Job spec (YAML or JSON).")],
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Experiment (else the spec's).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Check a job spec as a submission would (the server included); submit nothing. Same as create --dry-run."""
    create(file=file, experiment=experiment, name=None, wait=False, follow=False, env=None, dry_run=True,
           workspace=workspace)  # fmt: skip


@app.command("list")
def list_(
    experiment: ExperimentOpt = None,
    state: Annotated[JobState | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    all_experiments: Annotated[bool, typer.Option("--all", "-A", help="Jobs of every experiment.")] = False,
    workspace: WorkspaceOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List the jobs of an experiment (default: CORRAL_EXPERIMENT, else default), or of all of them."""
    jobs = client(workspace, experiment).list_jobs(
        state=state.value if state else None, all_experiments=all_experiments
    )
    rows = [
        (
            j.name,
            j.experiment,
            j.state.value,
            j.cluster,
            j.node_count,
            j.priority,
            j.exit_code,
            when(j.created_at),
            j.error.code if j.error else (j.reason or ""),
        )
        for j in jobs
    ]
    headers = ["NAME", "EXPERIMENT", "STATE", "CLUSTER", "NODES", "PRIORITY", "EXIT", "CREATED", "ERROR/REASON"]
    emit(jobs, output, make_table(headers, rows))


@app.command("show")
def show(
    name: JobNameArg, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None, output: OutputOpt = "table"
) -> None:
    """Show a job: state, timing, exit code, error, attempts."""
    j = client(workspace, experiment).get_job(name)
    rows = [
        ("name", j.name),
        ("experiment", j.experiment),
        ("cluster", j.cluster),
        ("state", j.state.value),
        ("reason", j.reason or ""),
        ("step", j.step or ""),
        ("toolkit", j.toolkit),
        ("nodes", f"{j.node_count} {', '.join(j.nodes)}".strip()),
        ("ranks", j.rank_count),
        ("priority", j.priority),
        ("submitted by", j.submitted_by),
        ("created", when(j.created_at)),
        ("started", when(j.started_at)),
        ("ended", when(j.ended_at)),
        ("exit code", j.exit_code),
        ("error", f"{j.error.code}: {j.error.message}" if j.error else ""),
        ("job dir", j.job_dir),
        *([("array", _array_text(j.array))] if j.array is not None else []),
        *(
            (
                f"attempt {a.number}",
                f"{a.reason or 'running'}, exit {a.exit_code}, {when(a.started_at)} -> {when(a.ended_at) or '…'}"
                f" on {', '.join(a.nodes)}",
            )
            for a in j.attempts
        ),
    ]
    emit(j, output, make_table(["FIELD", "VALUE"], rows))


def _array_text(array: ArrayStatus) -> str:
    made = ", ".join(f"{n} {state}" for state, n in sorted(array.counts.items()))
    failed = f"; failed indexes: {', '.join(map(str, array.failed_indexes))}" if array.failed_indexes else ""
    return f"{array.count} tasks; made: {made or 'none yet'}{failed}"


@app.command("logs")
def logs(
    name: JobNameArg,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Stream until the job ends (every rank unless told); exit with its code."),
    ] = False,
    rank: Annotated[int | None, typer.Option("--rank", "-r", help="One rank (default: 0; with -f, all).")] = None,
    ranks: Annotated[str | None, typer.Option("--ranks", help="Several ranks: 'all' or 0,3.")] = None,
    node: Annotated[
        int | None, typer.Option("--node", help="The ranks on the job's node N (with --stream prepare: its prepare).")
    ] = None,
    attempt: Annotated[
        int | None, typer.Option("--attempt", "-a", min=1, help="Attempt (default: the latest).")
    ] = None,
    stream: Annotated[
        str,
        typer.Option(
            "--stream",
            help="stdout, stderr, prepare, environment or upload (per node: staging inputs, building the "
            "environment, uploading outputs), or mpirun.",
        ),
    ] = "",
    tail: Annotated[
        int | None,
        typer.Option("--tail", "-n", min=0, help="Only the last N lines (-f: of each stream)."),
    ] = None,
    experiment: ExperimentOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a job's logs: stdout to stdout, stderr to stderr; ``[rank node]`` before each line of several ranks."""
    c = client(workspace, experiment)
    if stream in ("prepare", "environment", "upload", "mpirun"):
        if follow:
            raise typer.BadParameter(f"{stream} logs are printed, not followed", param_hint="--stream")
        which_rank = node if node is not None else (rank or 0)
        for chunk in c.stream_logs(name, rank=which_rank, stream=stream, attempt=attempt, tail=tail):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    if stream not in ("", "stdout", "stderr"):
        raise typer.BadParameter(
            f"give stdout, stderr, prepare, environment, upload or mpirun, got {stream!r}", param_hint="--stream"
        )
    chosen = _chosen_ranks(c, name, rank=rank, ranks=ranks, node=node, follow=follow)
    if follow:
        job = _follow(c, name, ranks=chosen, streams=stream or "stdout,stderr", attempt=attempt, tail=tail)
        raise typer.Exit(exit_status(job))
    job = c.get_job(name)
    selected = range(job.rank_count) if chosen == "all" else [int(r) for r in chosen.split(",")]
    prefixed = len(selected) > 1
    for which in [stream] if stream else ["stdout", "stderr"]:
        out = sys.stderr if which == "stderr" else sys.stdout
        out.flush()
        for r in selected:
            data = c.stream_logs(name, rank=r, stream=which, attempt=attempt, tail=tail)
            if prefixed:
                where = job.rank_nodes[r] if r < len(job.rank_nodes) and job.rank_nodes[r] else ""
                data = _prefixed(data, f"[{r}{' ' + where if where else ''}] ".encode())
            for chunk in data:
                out.buffer.write(chunk)
        out.buffer.flush()


def _prefixed(chunks: Iterator[bytes], prefix: bytes) -> Iterator[bytes]:
    """``prefix`` before every line of a streamed log (lines end at ``\\n`` only: a ``\\r`` stays inside)."""
    carry = b""
    for chunk in chunks:
        *whole, carry = (carry + chunk).split(b"\n")
        if whole:
            yield b"".join(prefix + line + b"\n" for line in whole)
    if carry:
        yield prefix + carry + b"\n"


def _chosen_ranks(c: Client, name: str, *, rank: int | None, ranks: str | None, node: int | None, follow: bool) -> str:
    """``all`` or ``0,3``: what ``--rank``, ``--ranks`` and ``--node`` say (by default rank 0, or all with -f)."""
    if sum(x is not None for x in (rank, ranks, node)) > 1:
        raise typer.BadParameter("give one of --rank, --ranks and --node")
    if rank is not None:
        return str(rank)
    if ranks is not None:
        return ranks
    if node is None:
        return "all" if follow else "0"
    job = c.get_job(name)
    if not 0 <= node < len(job.nodes):
        raise typer.BadParameter(f"the job runs on nodes 0..{len(job.nodes) - 1}, got {node}", param_hint="--node")
    on_node = [str(r) for r, where in enumerate(job.rank_nodes) if where == job.nodes[node]]
    if not on_node:
        raise typer.BadParameter(f"the ranks of node {node} are placed by mpirun: give --rank", param_hint="--node")
    return ",".join(on_node)


@app.command("terminate")
def terminate(name: JobNameArg, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Terminate a job (SIGTERM, then SIGKILL after its grace period); an array's every task, or NAME[17] one."""
    task = re.fullmatch(r"(.+)\[(\d+)\]", name)
    if task is not None:
        job = client(workspace, experiment).terminate_job(task[1], index=int(task[2]))
    else:
        job = client(workspace, experiment).terminate_job(name)
    console.print(f"{job.name} {job.state.value}")


@app.command("wait")
def wait(
    name: JobNameArg,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 124).")] = None,
    experiment: ExperimentOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Wait for a job to end; exit with its exit code (non-zero if it failed or was terminated), 124 when
    ``--timeout`` passes first, 4 when there is no such job."""
    c = client(workspace, experiment)
    try:
        job = c.wait_job(name, timeout=timeout)
    except NotFound as exc:
        err_console.print(f"error: {exc.message}")
        raise typer.Exit(NOT_FOUND_EXIT) from None
    if not job.state.is_terminal:
        err_console.print(f"job {name} is still {job.state.value}")
        raise typer.Exit(124)
    console.print(f"{job.name} {job.state.value}")
    _describe_end(c, job)
    raise typer.Exit(exit_status(job))


@app.command("delete")
def delete(
    name: JobNameArg, yes: YesOpt = False, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None
) -> None:
    """Delete a finished job and its logs (outputs written to your own paths stay); it asks first, unless --yes."""
    c = client(workspace, experiment)
    if not yes:
        job = c.get_job(name)
        confirm(f"Delete job {name!r} ({job.state.value}, experiment {job.experiment}) and its logs?")
    c.delete_job(name)
    console.print(f"deleted job {name}")


@app.command("events")
def events(
    name: JobNameArg, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None, output: OutputOpt = "table"
) -> None:
    """The job's history of state changes."""
    items = client(workspace, experiment).job_events(name)
    rows = [(when(e.at), e.from_state or "", e.to_state, e.reason or "", e.message or "") for e in items]
    emit(items, output, make_table(["AT", "FROM", "TO", "REASON", "MESSAGE"], rows))


@app.command("files")
def files(
    name: JobNameArg,
    output_id: Annotated[str | None, typer.Option("--output", help="Output id (or stdouterr).")] = None,
    path: Annotated[str, typer.Option("--path", help="Directory inside the output.")] = "",
    experiment: ExperimentOpt = None,
    workspace: WorkspaceOpt = None,
    fmt: Annotated[str, typer.Option("-o", "--format", help="Output format: table, json or yaml.")] = "table",
) -> None:
    """List a job's output files (without --output: its output ids)."""
    entries = list(client(workspace, experiment).list_files(name, output=output_id, path=path))
    rows = [(e.path + ("/" if e.is_dir else ""), "" if e.is_dir else e.size, when(e.modified_at)) for e in entries]
    emit(entries, fmt, make_table(["PATH", "SIZE", "MODIFIED"], rows))


@app.command("download")
def download(
    name: JobNameArg,
    dest: Annotated[Path, typer.Argument(help="Where to save: a directory (created), or a file's new name.")],
    output_id: Annotated[str, typer.Option("--output", help="Output id (or stdouterr).")],
    path: Annotated[
        str, typer.Option("--path", help="A file or directory inside the output (default: all of it).")
    ] = "",
    experiment: ExperimentOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Download a job's output: a file, a directory, or all of it; prints each file saved."""
    with transfer_progress(f"downloading {output_id}") as progress:
        saved = client(workspace, experiment).download(
            name, output=output_id, path=path, destination=dest, progress=progress
        )
    for path_saved in saved:
        console.print(str(path_saved))


app.command("metrics")(metrics.metrics)
