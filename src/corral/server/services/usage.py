"""Usage of a workspace: node-hours and GPU-hours per user and per experiment, from the attempts."""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.core.models import Usage, UsageRow
from corral.core.specs import node_gpus
from corral.server.services.lookup import workspace_row
from corral.store.tables import AttemptRow, ClusterRow, ExperimentRow, JobRow


def workspace_usage(session: Session, *, workspace: str) -> Usage:
    ws = workspace_row(session, workspace)
    rows = session.execute(
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
    now = time.time()
    totals: dict[str, dict[str, list[float]]] = {
        "user": defaultdict(lambda: [0.0, 0.0]),
        "exp": defaultdict(lambda: [0.0, 0.0]),
    }
    jobs: dict[str, dict[str, set[int]]] = {"user": defaultdict(set), "exp": defaultdict(set)}
    for job_id, user, experiment, cluster_spec, node_ids, started_at, ended_at in rows:
        hours = len(node_ids) * max(0.0, (ended_at or now) - started_at) / 3600
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
