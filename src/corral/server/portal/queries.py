"""What the portal's pages read that the API's services do not give in one query: a page of the jobs list
(newest first, filtered, a few columns), the counts of the overview, every sweep of a workspace, and the last
objective value of each trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from corral.core.states import JobState
from corral.server.services.lookup import workspace_row
from corral.store.tables import ClusterRow, ExperimentRow, JobRow, MetricSeriesRow, SweepRow, TrialRow

#: Rows on a page of the jobs list.
PAGE_ROWS = 50


@dataclass(frozen=True)
class JobFilter:
    state: str = ""
    experiment: str = ""
    user: str = ""
    cluster: str = ""
    #: Part of the name.
    text: str = ""

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.state:
            query = query.where(JobRow.state == self.state)
        if self.experiment:
            query = query.where(ExperimentRow.name == self.experiment)
        if self.user:
            query = query.where(JobRow.submitted_by == self.user)
        if self.cluster:
            query = query.where(JobRow.cluster_name == self.cluster)
        if self.text:
            query = query.where(JobRow.name.contains(self.text, autoescape=True))
        return query


@dataclass(frozen=True)
class JobPage:
    rows: list[dict[str, Any]]
    #: Row ids to page from: ``before`` the last row (older ones), ``after`` the first (newer ones); None at an end.
    older: int | None
    newer: int | None


def job_page(
    session: Session, workspace: str, f: JobFilter, *, before: int | None = None, after: int | None = None
) -> JobPage:
    """A page of the workspace's jobs, newest first, by keyset: ``before`` (older than this id), ``after``
    (newer than it), else the newest. An array is one row (its tasks are on its own page)."""
    ws = workspace_row(session, workspace)
    columns = (
        JobRow.id, JobRow.name, JobRow.state, JobRow.reason, JobRow.submitted_by, JobRow.cluster_name,
        JobRow.node_count, JobRow.created_at, JobRow.started_at, JobRow.ended_at, JobRow.error_code,
        JobRow.array_count, ExperimentRow.name.label("experiment"),
    )  # fmt: skip
    query: Select[Any] = (
        select(*columns)  # type: ignore[assignment]  # one row type for every filter's query
        .join(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
        .where(JobRow.workspace_id == ws.id, JobRow.array_id.is_(None))
    )
    query = f.apply(query)
    if after is not None:
        found = session.execute(query.where(JobRow.id > after).order_by(JobRow.id).limit(PAGE_ROWS + 1)).all()
        more_newer = len(found) > PAGE_ROWS
        rows = list(reversed(found[:PAGE_ROWS]))
        more_older = True
    else:
        if before is not None:
            query = query.where(JobRow.id < before)
        found = session.execute(query.order_by(JobRow.id.desc()).limit(PAGE_ROWS + 1)).all()
        rows, more_older, more_newer = list(found[:PAGE_ROWS]), len(found) > PAGE_ROWS, before is not None
    return JobPage(
        rows=[dict(r._mapping) for r in rows],
        older=rows[-1].id if rows and more_older else None,
        newer=rows[0].id if rows and more_newer else None,
    )


def filter_choices(session: Session, workspace: str) -> dict[str, list[str]]:
    """The values each filter of the jobs list offers."""
    ws = workspace_row(session, workspace)
    experiments = session.scalars(
        select(ExperimentRow.name).where(ExperimentRow.workspace_id == ws.id).order_by(ExperimentRow.name)
    )
    users = session.scalars(
        select(JobRow.submitted_by).distinct().where(JobRow.workspace_id == ws.id).order_by(JobRow.submitted_by)
    )
    clusters = session.scalars(
        select(ClusterRow.name).where(ClusterRow.workspace_id == ws.id).order_by(ClusterRow.name)
    )
    return {
        "state": [s.value for s in JobState],
        "experiment": list(experiments),
        "user": list(users),
        "cluster": list(clusters),
    }


def job_counts(session: Session, workspace: str) -> dict[str, int]:
    """The workspace's jobs by state (arrays as one)."""
    ws = workspace_row(session, workspace)
    query = (
        select(JobRow.state, func.count())
        .where(JobRow.workspace_id == ws.id, JobRow.array_id.is_(None))
        .group_by(JobRow.state)
    )
    return {state: count for state, count in session.execute(query).all()}


def workspace_sweeps(session: Session, workspace: str) -> list[dict[str, Any]]:
    """Every sweep of the workspace, newest first, with its trials by state."""
    ws = workspace_row(session, workspace)
    sweeps = session.execute(
        select(SweepRow, ExperimentRow.name)
        .join(ExperimentRow, ExperimentRow.id == SweepRow.experiment_id)
        .where(SweepRow.workspace_id == ws.id)
        .order_by(SweepRow.id.desc())
    ).all()
    counts: dict[int, dict[str, int]] = {}
    ids = [row.id for row, _ in sweeps]
    for sweep_id, state, count in session.execute(
        select(TrialRow.sweep_id, TrialRow.state, func.count())
        .where(TrialRow.sweep_id.in_(ids))
        .group_by(TrialRow.sweep_id, TrialRow.state)
    ).all():
        counts.setdefault(sweep_id, {})[state] = count
    return [
        {"name": row.name, "experiment": exp, "state": row.state, "created_by": row.created_by,
         "created_at": row.created_at, "objective": row.spec.get("objective", {}), "counts": counts.get(row.id, {})}
        for row, exp in sweeps
    ]  # fmt: skip


def last_objective(session: Session, job_ids: list[int], metric: str) -> dict[int, float]:
    """The last value of ``metric`` that rank 0 of each job's latest attempt reported (pruned trials have no
    objective of their own: this is where they stood)."""
    if not job_ids:
        return {}
    s = MetricSeriesRow
    rows = session.execute(
        select(s.job_id, s.attempt, s.last_value)
        .where(s.job_id.in_(job_ids), s.name == metric, s.rank == 0)
        .order_by(s.job_id, s.attempt)
    ).all()
    return {job_id: value for job_id, _, value in rows}  # the latest attempt's, by the order
