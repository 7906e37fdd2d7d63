"""Usage of a workspace: node-hours and GPU-hours per user and per experiment, from the attempts."""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from corral.core.models import Usage, UsageRow
from corral.core.specs import node_gpus
from corral.server.services.lookup import workspace_row
from corral.store.tables import AttemptRow, ClusterRow, ExperimentRow, JobRow


def workspace_usage(session: Session, *, workspace: str, since: float | None = None) -> Usage:
    """All of it, or the part of it after ``since`` (epoch seconds: an attempt that ran across it counts from it)."""
    ws = workspace_row(session, workspace)
    query = (
        select(
            JobRow.id,
            JobRow.submitted_by,
            ExperimentRow.name,
            ClusterRow.spec,
            AttemptRow.node_ids,
            AttemptRow.started_at,
            AttemptRow.ended_at,
        )
        .join(JobRow, JobRow.id == AttemptRow.job_id)
        .join(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
        .outerjoin(ClusterRow, ClusterRow.id == JobRow.cluster_id)
        .where(JobRow.workspace_id == ws.id)
    )
    if since is not None:
        query = query.where(or_(AttemptRow.ended_at.is_(None), AttemptRow.ended_at > since))
    now, since = time.time(), since or 0.0
    rows = session.execute(query)
    totals: dict[str, dict[str, list[float]]] = {
        "user": defaultdict(lambda: [0.0, 0.0]),
        "exp": defaultdict(lambda: [0.0, 0.0]),
    }
    jobs: dict[str, dict[str, set[int]]] = {"user": defaultdict(set), "exp": defaultdict(set)}
    for job_id, user, experiment, cluster_spec, node_ids, started_at, ended_at in rows:
        hours = len(node_ids) * max(0.0, (ended_at or now) - max(started_at, since)) / 3600
        gpus = node_gpus(cluster_spec or {})
        for kind, key in (("user", user), ("exp", experiment)):
            totals[kind][key][0] += hours
            totals[kind][key][1] += hours * gpus
            jobs[kind][key].add(job_id)

    def table(kind: str) -> list[UsageRow]:
        return [
            UsageRow(name=name, node_hours=round(n, 6), gpu_hours=round(g, 6), jobs=len(jobs[kind][name]))
            for name, (n, g) in sorted(totals[kind].items(), key=lambda item: -item[1][0])
        ]

    return Usage(workspace=workspace, by_user=table("user"), by_experiment=table("exp"))
