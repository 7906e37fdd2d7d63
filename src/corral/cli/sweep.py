"""``corral sweep …``: hyperparameter sweeps (``docs/sweeps.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import ExperimentOpt, OutputOpt, WorkspaceOpt, client, console, emit, make_table, when
from corral.core.models import Sweep, Trial

app = typer.Typer(help="Sweeps: many trial jobs searching parameters for the best objective.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="The sweep's name.")]


def _value(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _params(trial: Trial) -> str:
    return " ".join(f"{k}={v}" for k, v in trial.params.items())


def _counts(sweep: Sweep) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(sweep.trial_counts.items()))


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("-f", "--file", help="The sweep's spec (YAML or JSON).")],
    experiment: ExperimentOpt = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Make a sweep: its trials start at once; prints its name."""
    sweep = client(workspace, experiment).create_sweep(file, experiment=experiment)
    print(sweep.name)


@app.command("list")
def list_(experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """The experiment's sweeps."""
    sweeps = client(workspace, experiment).list_sweeps(experiment=experiment)
    rows = [
        (s.name, s.state, _counts(s), s.spec["objective"]["metric"], _value(s.best.value) if s.best else "",
         when(s.created_at))
        for s in sweeps
    ]  # fmt: skip
    emit(sweeps, output, make_table(["NAME", "STATE", "TRIALS", "OBJECTIVE", "BEST", "CREATED"], rows))


@app.command("show")
def show(
    name: NameArg, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None, output: OutputOpt = "table"
) -> None:
    """A sweep and its trials, the best first."""
    sweep = client(workspace, experiment).get_sweep(name, experiment=experiment)
    objective = sweep.spec["objective"]
    if output == "table":
        said = f" ({sweep.message})" if sweep.message else ""
        aim = f"{objective.get('mode', 'min')} {objective['metric']}"
        console.print(f"{sweep.name}: {sweep.state}{said}; {aim}; {_counts(sweep)}", highlight=False)
    rows = [(t.number, t.state, _value(t.value), _params(t), t.job, t.message or "") for t in sweep.trials]
    emit(sweep, output, make_table(["TRIAL", "STATE", "OBJECTIVE", "PARAMS", "JOB", "MESSAGE"], rows))


@app.command("best")
def best(
    name: NameArg, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None, output: OutputOpt = "table"
) -> None:
    """The best trial: its objective, parameters, job and outputs."""
    c = client(workspace, experiment)
    sweep = c.get_sweep(name, experiment=experiment)
    if sweep.best is None:
        raise typer.Exit(_say(f"sweep {name!r} has no complete trial yet ({_counts(sweep) or 'no trials'})"))
    trial = sweep.best
    job = c.get_job(trial.job, experiment=sweep.experiment)
    outputs = [o.id for o in job.spec.outputs] if job.spec else []
    if output != "table":
        emit({"trial": trial.model_dump(mode="json"), "outputs": outputs}, output)
        return
    files = f"corral job files {trial.job} -e {sweep.experiment} --output"
    rows = [("trial", trial.number), ("objective", _value(trial.value)), ("job", trial.job),
            *((f"param {k}", v) for k, v in trial.params.items()),
            *((f"output {o}", f"{files} {o}") for o in outputs)]  # fmt: skip
    emit(trial, output, make_table(["FIELD", "VALUE"], rows))


def _say(message: str) -> int:
    console.print(message, highlight=False)
    return 1


@app.command("terminate")
def terminate(name: NameArg, experiment: ExperimentOpt = None, workspace: WorkspaceOpt = None) -> None:
    """End a sweep: no new trials; its running trials are terminated."""
    sweep = client(workspace, experiment).terminate_sweep(name, experiment=experiment)
    print(f"{sweep.name} {sweep.state}")
