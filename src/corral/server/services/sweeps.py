"""Sweeps as stored: made (checked whole first: the spec, its first trial as a job), listed, shown with their
trials best first, and terminated. The server's sweep driver (``server/sweep_driver.py``) runs them."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.errors import AlreadyExists, Conflict, InvalidSpec, NotFound
from corral.core.models import JobCreate, Sweep, Trial
from corral.core.spec_parsing import parse_spec
from corral.core.sweep_specs import SweepSpec, first_values, trial_spec, trial_values
from corral.server.services import experiments
from corral.server.services.lookup import experiment_row, workspace_row
from corral.store.tables import SweepRow, TrialRow

#: A sweep's name leaves room for its trials' job names (``<sweep>-<number>``).
MAX_SWEEP_NAME = 56
RUNNING, SUCCEEDED, FAILED, TERMINATED = "running", "succeeded", "failed", "terminated"
#: A trial's states; those after RUNNING are final.
PENDING, COMPLETE, PRUNED = "pending", "complete", "pruned"
FINAL = frozenset({COMPLETE, PRUNED, FAILED, TERMINATED})


def trial_job_name(sweep: str, number: int) -> str:
    return f"{sweep}-{number}"


def check_sweep(data: dict[str, Any], experiment: str) -> tuple[SweepSpec, str, JobCreate]:
    """The spec, its name (given or made) and its first trial as a job submission, to be dry-run (a trial's
    errors then name the job spec's fields)."""
    spec = parse_spec(SweepSpec, data, source="sweep")
    name = spec.name or f"sweep-{uuid.uuid4().hex[:10]}"
    if len(name) > MAX_SWEEP_NAME:
        raise InvalidSpec(f"sweep: name: at most {MAX_SWEEP_NAME} characters (its trials add -<number>), got {name!r}")
    first = trial_spec(spec, first_values(spec))
    request = JobCreate(spec=first, name=trial_job_name(name, 0), experiment=experiment, code_archive=spec.code_archive)
    return spec, name, request


def create_sweep(
    session: Session, *, workspace: str, experiment: str, name: str, spec: SweepSpec, created_by: str
) -> Sweep:
    ws = workspace_row(session, workspace)
    exp = experiments.get_or_create(session, ws.id, experiment)
    taken = session.scalar(select(SweepRow.id).where(SweepRow.experiment_id == exp.id, SweepRow.name == name))
    if taken is not None:
        raise AlreadyExists(f"sweep {name!r} already exists in experiment {experiment!r}")
    row = SweepRow(
        workspace_id=ws.id, experiment_id=exp.id, name=name, spec=spec.model_dump(mode="json"), state=RUNNING,
        created_by=created_by, created_at=time.time(),
    )  # fmt: skip
    session.add(row)
    session.flush()
    return to_model(session, row, workspace, experiment, with_trials=False)


def sweep_row(session: Session, workspace: str, experiment: str, name: str) -> SweepRow:
    ws = workspace_row(session, workspace)
    exp = experiment_row(session, ws, experiment)
    row = session.scalars(select(SweepRow).where(SweepRow.experiment_id == exp.id, SweepRow.name == name)).first()
    if row is None:
        raise NotFound(f"sweep {name!r} not found in experiment {experiment!r}")
    return row


def list_sweeps(session: Session, *, workspace: str, experiment: str) -> list[Sweep]:
    ws = workspace_row(session, workspace)
    exp = experiment_row(session, ws, experiment)
    rows = session.scalars(select(SweepRow).where(SweepRow.experiment_id == exp.id).order_by(SweepRow.id))
    return [to_model(session, r, workspace, experiment, with_trials=False) for r in rows]


def get_sweep(session: Session, *, workspace: str, experiment: str, name: str) -> Sweep:
    row = sweep_row(session, workspace, experiment, name)
    return to_model(session, row, workspace, experiment, with_trials=True)


def end_sweep(session: Session, row: SweepRow, state: str, message: str | None) -> None:
    row.state, row.message, row.ended_at = state, message, time.time()


def terminate_sweep(session: Session, *, workspace: str, experiment: str, name: str) -> tuple[Sweep, list[str]]:
    """Ends the sweep; the jobs of its trials pending or running (for the caller to terminate once committed)."""
    row = sweep_row(session, workspace, experiment, name)
    session.refresh(row, with_for_update=True)  # the driver makes a trial only under this lock
    if row.state != RUNNING:
        raise Conflict(f"sweep {name!r} already {row.state}")
    end_sweep(session, row, TERMINATED, "terminated on request")
    jobs = []
    open_trials = select(TrialRow).where(TrialRow.sweep_id == row.id, TrialRow.state.in_((PENDING, RUNNING)))
    for trial in session.scalars(open_trials):
        trial.state, trial.message, trial.ended_at = TERMINATED, "its sweep was terminated", time.time()
        jobs.append(trial.job_name)
    return to_model(session, row, workspace, experiment, with_trials=False), jobs


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def trial_model(spec: SweepSpec, row: TrialRow) -> Trial:
    return Trial(
        number=row.number, params=trial_values(spec, row.params), job=row.job_name, state=row.state,
        value=row.value, message=row.message, created_at=datetime.fromtimestamp(row.created_at, UTC),
        ended_at=_ts(row.ended_at),
    )  # fmt: skip


def ranked(spec: SweepSpec, trials: list[TrialRow]) -> list[TrialRow]:
    """Best first: complete trials by their objective, then running, pending, pruned, failed, terminated."""
    order = {COMPLETE: 0, RUNNING: 1, PENDING: 2, PRUNED: 3, FAILED: 4, TERMINATED: 5}
    sign = 1 if spec.objective.mode == "min" else -1

    def key(t: TrialRow) -> tuple[int, float, int]:
        value = sign * t.value if t.state == COMPLETE and t.value is not None else 0.0
        return (order.get(t.state, 6), value, t.number)

    return sorted(trials, key=key)


def to_model(session: Session, row: SweepRow, workspace: str, experiment: str, *, with_trials: bool) -> Sweep:
    spec = SweepSpec.model_validate(row.spec)
    counts = dict(
        session.execute(
            select(TrialRow.state, func.count()).where(TrialRow.sweep_id == row.id).group_by(TrialRow.state)
        ).all()
    )
    trials = list(session.scalars(select(TrialRow).where(TrialRow.sweep_id == row.id))) if with_trials else []
    best_query = select(TrialRow).where(TrialRow.sweep_id == row.id, TrialRow.state == COMPLETE)
    best_query = best_query.order_by(TrialRow.value.asc() if spec.objective.mode == "min" else TrialRow.value.desc())
    best = session.scalars(best_query.limit(1)).first()
    return Sweep(
        name=row.name, workspace=workspace, experiment=experiment, state=row.state, message=row.message,
        spec=row.spec, created_by=row.created_by, created_at=datetime.fromtimestamp(row.created_at, UTC),
        ended_at=_ts(row.ended_at), trial_counts=counts, best=trial_model(spec, best) if best else None,
        trials=[trial_model(spec, t) for t in ranked(spec, trials)],
    )  # fmt: skip
