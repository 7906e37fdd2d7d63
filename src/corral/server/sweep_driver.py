"""Runs the sweeps: one Optuna study in memory per running sweep, driven with ask and tell; Corral's tables stay
the truth.

Every ``drivers.POLL_SECONDS`` (or at once when a sweep is made, or a job ended) the driver, for each running sweep:

- reports each running trial's new objective points (rank 0 of its job's latest attempt, read from the metric
  tables as the metrics reader stores them) to its Optuna trial, asking the pruner after each: a trial to prune
  is terminated at once, its job ending ``terminated`` with the reason ``Pruned`` and a message that says why;
- tells the study how the trials whose jobs ended went: complete with the last value of the objective, or
  failed;
- asks the study for new trials while fewer than ``parallelism`` run and the budget allows. A trial's row, with
  its parameters, is written *before* its job is submitted (named ``<sweep>-<number>``), so after a crash a
  pending trial's job is found by its name or submitted then, never twice;
- ends the sweep once its trials are spent (``succeeded``) or ``max_failed_trials`` failed (``failed``).

A restarted server (or any error in a pass) rebuilds a sweep's study from its trials: finished ones are added
with their values and intermediate values, running ones as running trials the pruner goes on with. Optuna's own
database storage is not used: it would share Alembic's version table with Corral's.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from corral.core.errors import AlreadyExists, Conflict, CorralError, NotFound, TooManyRequests
from corral.core.models import JobCreate
from corral.core.states import ErrorCode, JobState
from corral.core.sweep_specs import ChoiceParam, DictParam, FloatParam, SweepSpec, grid, grid_size, trial_spec
from corral.core.sweep_specs import trial_values as values_of
from corral.server.access import Access
from corral.server.drivers import Driver
from corral.server.services import commands
from corral.server.services.sweeps import (
    COMPLETE,
    FAILED,
    FINAL,
    PENDING,
    PRUNED,
    RUNNING,
    SUCCEEDED,
    TERMINATED,
    end_sweep,
    trial_job_name,
)  # fmt: skip
from corral.store.tables import (
    AttemptRow,
    ExperimentRow,
    JobRow,
    MetricPointRow,
    MetricSeriesRow,
    SweepRow,
    TrialRow,
    WorkspaceRow,
)  # fmt: skip

if TYPE_CHECKING:
    from corral.server.context import ServerContext

log = logging.getLogger(__name__)


@dataclass
class _Running:
    #: Optuna's trial (reports and the pruner go through it).
    trial: Any
    #: The last step reported to it.
    reported: int = -1


@dataclass
class _Live:
    id: int
    name: str
    workspace: str
    experiment: str
    spec: SweepSpec
    study: Any
    distributions: dict[str, Any]
    running: dict[int, _Running] = field(default_factory=dict)


class SweepDriver(Driver):
    name = "corral-sweeps"

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self._live: dict[int, _Live] = {}

    def pass_once(self) -> bool:
        with self._ctx.db.read() as session:
            rows = session.execute(
                select(SweepRow.id, SweepRow.name, WorkspaceRow.name, ExperimentRow.name)
                .join(WorkspaceRow, WorkspaceRow.id == SweepRow.workspace_id)
                .join(ExperimentRow, ExperimentRow.id == SweepRow.experiment_id)
                .where(SweepRow.state == RUNNING)
            ).all()
        for gone in set(self._live) - {r[0] for r in rows}:
            del self._live[gone]
        for sweep_id, name, workspace, experiment in rows:
            try:
                live = self._live.get(sweep_id) or self._load(sweep_id, name, workspace, experiment)
                self._live[sweep_id] = live
                self._advance(live)
            except Exception:  # the next pass rebuilds the study from the tables
                self._live.pop(sweep_id, None)
                log.exception("sweep %s: this pass failed; it goes on from what is stored", name)
        return bool(rows)

    # ------------------------------------------------------------ the study

    def _load(self, sweep_id: int, name: str, workspace: str, experiment: str) -> _Live:
        import optuna
        from optuna.trial import TrialState, create_trial

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with self._ctx.db.read() as session:
            spec = SweepSpec.model_validate(session.get(SweepRow, sweep_id).spec)  # type: ignore[union-attr]
            trials = list(
                session.scalars(select(TrialRow).where(TrialRow.sweep_id == sweep_id).order_by(TrialRow.number))
            )
            reported = {t.number: _objective(session, t.job_id, spec) for t in trials if t.job_id is not None}
        direction = "minimize" if spec.objective.mode == "min" else "maximize"
        study = optuna.create_study(direction=direction, sampler=_sampler(spec), pruner=_pruner(spec))  # type: ignore[arg-type]
        live = _Live(sweep_id, name, workspace, experiment, spec, study, _distributions(spec))
        states = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED}
        for t in trials:
            points = reported.get(t.number, {})
            state = states.get(t.state, TrialState.FAIL) if t.state in FINAL else TrialState.RUNNING
            value = t.value if state == TrialState.COMPLETE else None
            study.add_trial(create_trial(params=t.params, distributions=live.distributions, value=value,
                                         intermediate_values=points, state=state, system_attrs=t.notes))  # fmt: skip
            if state == TrialState.RUNNING:
                trial = optuna.trial.Trial(study, study.trials[-1]._trial_id)
                live.running[t.number] = _Running(trial, max(points, default=-1))
        return live

    def _advance(self, live: _Live) -> None:
        spec = live.spec
        try:
            self._access(live)
        except CorralError as exc:  # its maker was deleted: nobody to run its trials as
            self._end_sweep(live, FAILED, exc.message)
            return
        with self._ctx.db.read() as session:
            open_trials = list(
                session.scalars(
                    select(TrialRow).where(TrialRow.sweep_id == live.id, TrialRow.state.in_((PENDING, RUNNING)))
                )
            )
            job_ids = [t.job_id for t in open_trials if t.job_id is not None]
            jobs = {j.id: j for j in session.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))}
            # An ended trial is told once the metrics reader has read its last lines (AttemptRow.metrics_read).
            ended = [j.id for j in jobs.values() if j.ended_at is not None]
            unread = set(
                session.scalars(
                    select(AttemptRow.job_id)
                    .join(JobRow, JobRow.id == AttemptRow.job_id)
                    .where(AttemptRow.job_id.in_(ended), AttemptRow.number == JobRow.attempt_count)
                    .where(AttemptRow.metrics_read.is_(False))
                )
            )
            points = {
                t.number: _objective(session, t.job_id, spec, after=live.running[t.number].reported)
                for t in open_trials
                if t.job_id is not None and t.number in live.running
            }
        for t in open_trials:
            if t.state == PENDING:
                self._submit(live, t)
                continue
            job = jobs.get(t.job_id) if t.job_id is not None else None
            if job is None:  # its job was deleted (the trial's link to it is gone with it)
                self._end_trial(live, t, FAILED, None, "its job was deleted")
            elif (
                not self._report(live, t, points.get(t.number, {}))
                and job.ended_at is not None
                and job.id not in unread
            ):
                self._finish(live, t, job)  # ended, and its last points are in
        with self._ctx.db.read() as session:  # after this pass's ends: their slots are free now
            counts = dict(
                session.execute(
                    select(TrialRow.state, func.count()).where(TrialRow.sweep_id == live.id).group_by(TrialRow.state)
                ).all()
            )
        self._launch(live, counts)

    def _report(self, live: _Live, t: TrialRow, points: dict[int, float]) -> bool:
        """Tell the trial its new points, the pruner asked after each; True when it was pruned."""
        running = live.running[t.number]
        for step in sorted(points):
            running.trial.report(points[step], step)
            running.reported = step
            if running.trial.should_prune():
                why = _why_pruned(live, t.number, step, points[step])
                try:
                    commands.terminate_job(
                        self._ctx, workspace=live.workspace, experiment=live.experiment, name=t.job_name,
                        access=self._access(live), why=(ErrorCode.PRUNED, why),
                    )  # fmt: skip
                except Conflict:  # it ended meanwhile: how it ended decides
                    return False
                self._end_trial(live, t, PRUNED, None, why)
                return True
        return False

    def _finish(self, live: _Live, t: TrialRow, job: JobRow) -> None:
        if job.state == JobState.SUCCEEDED:
            with self._ctx.db.read() as session:
                points = _objective(session, job.id, live.spec)
            if not points:
                metric = live.spec.objective.metric
                self._end_trial(live, t, FAILED, None, f"it succeeded but rank 0 reported no {metric!r}")
            else:
                self._end_trial(live, t, COMPLETE, points[max(points)], None)
        elif job.error_code == ErrorCode.PRUNED:
            self._end_trial(live, t, PRUNED, None, job.error_message)
        elif job.state == JobState.TERMINATED:
            self._end_trial(live, t, TERMINATED, None, "its job was terminated")
        else:
            self._end_trial(live, t, FAILED, None, f"{job.error_code}: {job.error_message}")

    def _end_trial(self, live: _Live, t: TrialRow, state: str, value: float | None, message: str | None) -> None:
        from optuna.trial import TrialState

        with self._ctx.db.write() as session:
            row = session.get(TrialRow, t.id)
            assert row is not None
            row.state, row.value, row.message, row.ended_at = state, value, message, time.time()
        running = live.running.pop(t.number, None)
        if running is not None:
            told = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED}.get(state, TrialState.FAIL)
            live.study.tell(t.number, value if told == TrialState.COMPLETE else None, state=told)

    # ------------------------------------------------------------ new trials

    def _launch(self, live: _Live, counts: dict[str, int]) -> None:
        spec = live.spec
        budget = min(spec.max_trials, grid_size(spec)) if spec.sampler.type == "grid" else spec.max_trials
        made = sum(counts.values())
        failed = counts.get(FAILED, 0)
        open_now = counts.get(PENDING, 0) + counts.get(RUNNING, 0)
        if failed >= spec.max_failed_trials:
            if not open_now:
                self._end_sweep(live, FAILED, f"{failed} trials failed (max_failed_trials={spec.max_failed_trials})")
            return
        if made >= budget:
            if not open_now:
                self._end_sweep(live, SUCCEEDED, f"{made} trials ran (max_trials={spec.max_trials})")
            return
        for _ in range(min(spec.parallelism - open_now, budget - made)):
            trial = live.study.ask(live.distributions)
            number = trial.number
            frozen = live.study.trials[number]
            with self._ctx.db.write() as session:
                if not _still_running(session, live.id):  # terminated since this pass began
                    self._live.pop(live.id, None)
                    return
                row = TrialRow(
                    sweep_id=live.id, number=number, params=dict(trial.params), notes=dict(frozen.system_attrs),
                    job_name=trial_job_name(live.name, number), state=PENDING, created_at=time.time(),
                )  # fmt: skip
                session.add(row)
            live.running[number] = _Running(trial)
            if not self._submit(live, row):
                return

    def _submit(self, live: _Live, t: TrialRow) -> bool:
        """Submit a pending trial's job (or find it, made before a crash); False when the queue refused it."""
        spec = trial_spec(live.spec, values_of(live.spec, t.params))
        request = JobCreate(spec=spec, name=t.job_name, experiment=live.experiment, code_archive=live.spec.code_archive)
        try:
            access = self._access(live)
            commands.submit_job(self._ctx, workspace=live.workspace, request=request, access=access).result()
        except AlreadyExists:  # submitted before a crash, its trial not yet told: it is that trial's
            pass
        except TooManyRequests:  # the user's limits: the next pass tries again
            return False
        except CorralError as exc:  # this trial's spec is wrong (a parameter's value), or its cluster is gone
            self._end_trial(live, t, FAILED, None, f"its job was refused: {exc.message}")
            return True
        with self._ctx.db.write() as session:
            sweep = session.get(SweepRow, live.id)
            assert sweep is not None
            job_id = session.scalar(
                select(JobRow.id).where(JobRow.experiment_id == sweep.experiment_id, JobRow.name == t.job_name)
            )
            row = session.get(TrialRow, t.id)
            assert row is not None and job_id is not None
            row.job_id = job_id
            ended = not _still_running(session, live.id) or row.state != PENDING
            if not ended:
                row.state = RUNNING
        if ended:  # the sweep was terminated while its job was being submitted
            with contextlib.suppress(Conflict, NotFound):
                commands.terminate_job(self._ctx, workspace=live.workspace, experiment=live.experiment,
                                       name=t.job_name, access=self._access(live))  # fmt: skip
            return False
        return True

    def _access(self, live: _Live) -> Access:
        """The sweep's maker, as whom its trials are submitted and stopped."""
        with self._ctx.db.read() as session:
            maker = session.scalar(select(SweepRow.created_by).where(SweepRow.id == live.id))
        return self.acting_as(str(maker), live.workspace)

    def _end_sweep(self, live: _Live, state: str, message: str) -> None:
        with self._ctx.db.write() as session:
            row = session.get(SweepRow, live.id)
            assert row is not None
            if row.state == RUNNING:
                end_sweep(session, row, state, message)
        self._live.pop(live.id, None)


def _still_running(session: Any, sweep_id: int) -> bool:
    """Whether the sweep runs, its row locked until the caller's write ends (terminate_sweep takes the same lock)."""
    state = session.scalar(select(SweepRow.state).where(SweepRow.id == sweep_id).with_for_update())
    return bool(state == RUNNING)


def _objective(session: Any, job_id: int | None, spec: SweepSpec, *, after: int = -1) -> dict[int, float]:
    """Steps and values of the objective that rank 0 of the job's latest attempt reported, after step ``after``."""
    s, p = MetricSeriesRow, MetricPointRow
    series = session.scalar(
        select(s.id).where(s.job_id == job_id, s.name == spec.objective.metric, s.rank == 0)
        .order_by(s.attempt.desc()).limit(1)
    )  # fmt: skip
    if series is None:
        return {}
    rows = session.execute(select(p.step, p.value).where(p.series_id == series, p.step > after).order_by(p.step))
    return dict(rows.all())


def _why_pruned(live: _Live, number: int, step: int, value: float) -> str:
    """What the pruner saw, in words: the trial's value against the others' at that step."""
    import numpy as np
    from optuna.trial import TrialState

    spec, metric = live.spec, live.spec.objective.metric
    done = [t for t in live.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number != number]
    at_step = [t.intermediate_values[step] for t in done if step in t.intermediate_values]
    kind = spec.pruner.type
    mine = live.study.trials[number].intermediate_values
    best = min(mine.values()) if spec.objective.mode == "min" else max(mine.values())
    worse = "above" if spec.objective.mode == "min" else "below"
    if kind in ("median", "percentile") and at_step:
        q = 50.0 if kind == "median" else spec.pruner.percentile
        q = q if spec.objective.mode == "min" else 100 - q
        mark = float(np.nanpercentile(np.array(at_step, dtype=float), q))
        name = "median" if kind == "median" else f"{spec.pruner.percentile:g}th percentile"
        return (f"{metric} {best:.4g} (its best by step {step}) is worse than the {name} {mark:.4g} "
                f"of {len(at_step)} trials at step {step}")  # fmt: skip
    if kind == "threshold":
        return f"{metric} {value:.4g} at step {step} is outside [{spec.pruner.lower}, {spec.pruner.upper}]"
    return f"{metric} {value:.4g} at step {step}: {worse} what the {kind.replace('_', ' ')} pruner keeps at that step"


def _distributions(spec: SweepSpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    found: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        if isinstance(p, FloatParam):
            found[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, ChoiceParam):
            found[name] = CategoricalDistribution(p.values)
        elif isinstance(p, DictParam):
            found[name] = CategoricalDistribution(list(range(len(p.values))))
        else:
            found[name] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return found


def _sampler(spec: SweepSpec) -> Any:
    from optuna import samplers
    from optuna.exceptions import ExperimentalWarning

    seed = spec.sampler.seed
    kind = spec.sampler.type
    if kind == "grid":
        return samplers.GridSampler(grid(spec), seed=seed)
    if kind == "random":
        return samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if kind == "qmc":
        with warnings.catch_warnings():  # "experimental": its interface may change, which Corral's spec hides
            warnings.simplefilter("ignore", ExperimentalWarning)
            return samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return samplers.TPESampler(seed=seed)


def _pruner(spec: SweepSpec) -> Any:
    from optuna import pruners

    p = spec.pruner
    if p.type == "median":
        return pruners.MedianPruner(p.startup_trials, p.warmup_steps, p.interval_steps)
    if p.type == "percentile":
        return pruners.PercentilePruner(p.percentile, p.startup_trials, p.warmup_steps, p.interval_steps)
    if p.type == "successive_halving":
        return pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    if p.type == "hyperband":
        return pruners.HyperbandPruner(p.min_resource, p.max_resource or "auto", p.reduction_factor)
    if p.type == "threshold":
        return pruners.ThresholdPruner(lower=p.lower, upper=p.upper, n_warmup_steps=p.warmup_steps)
    return pruners.NopPruner()
