"""Find rows by the names users use, or raise NotFound naming what is missing."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.errors import NotFound
from corral.core.specs import TOOLKITS, JobSpec
from corral.core.states import TERMINAL_JOB_STATES
from corral.store.db import Database
from corral.store.tables import ClusterRow, ExperimentRow, JobRow, NodeRow, WorkspaceRow


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'local'?)`` when one of ``candidates`` is close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def workspace_row(session: Session, name: str) -> WorkspaceRow:
    row = session.scalars(select(WorkspaceRow).where(WorkspaceRow.name == name)).first()
    if row is None:
        hint = did_you_mean(name, session.scalars(select(WorkspaceRow.name)))
        raise NotFound(f"workspace {name!r} not found{hint}")
    return row


def cluster_row(session: Session, workspace: WorkspaceRow, name: str) -> ClusterRow:
    row = session.scalars(
        select(ClusterRow).where(ClusterRow.workspace_id == workspace.id, ClusterRow.name == name)
    ).first()
    if row is None:
        hint = did_you_mean(
            name, session.scalars(select(ClusterRow.name).where(ClusterRow.workspace_id == workspace.id))
        )
        raise NotFound(f"cluster {name!r} not found in workspace {workspace.name!r}{hint}")
    return row


def node_row(session: Session, *, workspace: str, cluster: str, node: str) -> tuple[ClusterRow, NodeRow]:
    """A node by its name (``node-0``) or its index (``0``), with its cluster's row; NotFound names what is
    missing."""
    row = cluster_row(session, workspace_row(session, workspace), cluster)
    which = NodeRow.index == int(node) if node.isdigit() else NodeRow.name == node
    found = session.scalars(select(NodeRow).where(NodeRow.cluster_id == row.id, which)).first()
    if found is None:
        names = session.scalars(select(NodeRow.name).where(NodeRow.cluster_id == row.id))
        raise NotFound(f"node {node!r} not found in cluster {cluster!r}{did_you_mean(node, names)}")
    return row, found


def experiment_row(session: Session, workspace: WorkspaceRow, name: str) -> ExperimentRow:
    row = session.scalars(
        select(ExperimentRow).where(ExperimentRow.workspace_id == workspace.id, ExperimentRow.name == name)
    ).first()
    if row is None:
        names = session.scalars(select(ExperimentRow.name).where(ExperimentRow.workspace_id == workspace.id))
        raise NotFound(f"experiment {name!r} not found in workspace {workspace.name!r}{did_you_mean(name, names)}")
    return row


def unfinished_jobs(session: Session, *, cluster_id: int | None = None, experiment_id: int | None = None) -> int:
    """How many jobs of a cluster or an experiment are queued, running or terminating."""
    query = select(func.count()).select_from(JobRow).where(JobRow.state.not_in([s.value for s in TERMINAL_JOB_STATES]))
    if cluster_id is not None:
        query = query.where(JobRow.cluster_id == cluster_id)
    if experiment_id is not None:
        query = query.where(JobRow.experiment_id == experiment_id)
    return int(session.scalar(query) or 0)


def stored_toolkit(stored: dict[str, object]) -> str:
    """The toolkit a stored spec names (read without validating it)."""
    return next((name for name in TOOLKITS if stored.get(name) is not None), "unknown")


def stored_job_spec(row: JobRow) -> JobSpec | None:
    """The job's spec as stored, or None when it does not load in this version (the loop fails such a job
    with ``InvalidSpec``; showing, terminating and deleting it still work)."""
    try:
        return JobSpec.model_validate(row.spec)
    except ValidationError:
        return None


def job_row(session: Session, workspace: str, experiment: str, name: str) -> tuple[JobRow, ExperimentRow]:
    found = session.execute(
        select(JobRow, ExperimentRow)
        .join(ExperimentRow, ExperimentRow.id == JobRow.experiment_id)
        .join(WorkspaceRow, WorkspaceRow.id == ExperimentRow.workspace_id)
        .where(WorkspaceRow.name == workspace, ExperimentRow.name == experiment, JobRow.name == name)
    ).first()
    if found is not None:
        return found[0], found[1]
    # Not found: look step by step to say what is missing.
    ws = workspace_row(session, workspace)
    exp = experiment_row(session, ws, experiment)
    row = session.scalars(select(JobRow).where(JobRow.experiment_id == exp.id, JobRow.name == name)).first()
    if row is None:
        elsewhere = list(
            session.scalars(
                select(ExperimentRow.name)
                .join(JobRow, JobRow.experiment_id == ExperimentRow.id)
                .where(ExperimentRow.workspace_id == ws.id, JobRow.name == name)
                .order_by(ExperimentRow.name)
            )
        )
        hint = f"; it is in experiment {', '.join(map(repr, elsewhere))} (-e {elsewhere[0]})" if elsewhere else ""
        raise NotFound(f"job {name!r} not found in experiment {experiment!r}{hint}")
    return row, exp


@dataclass(frozen=True)
class ClusterRef:
    id: int
    name: str
    #: The most nodes the cluster may have (its target, or max_nodes when it scales itself).
    max_nodes: int
    gpus_per_node: int


class NameCache:
    """Ids of workspaces, clusters and experiments by name, for the submission hot path.

    The server is the only writer of these tables (one server per home), so the
    cache is exact as long as every service that creates, changes or deletes one
    of them is followed by :meth:`invalidate` — the routers do that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], tuple[int, ClusterRef, int | None]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._entries.clear()

    def resolve(
        self, db: Database, *, workspace: str, cluster: str, experiment: str
    ) -> tuple[int, ClusterRef, int | None]:
        """(workspace id, cluster, experiment id or None if it does not exist yet); NotFound names what is missing.

        Reads the database only on a miss.
        """
        key = (workspace, cluster, experiment)
        with self._lock:
            found = self._entries.get(key)
        if found is not None:
            return found
        with db.read() as session:
            ws = workspace_row(session, workspace)
            row = cluster_row(session, ws, cluster)
            experiment_id = session.scalar(
                select(ExperimentRow.id).where(ExperimentRow.workspace_id == ws.id, ExperimentRow.name == experiment)
            )
        spec = row.parsed
        gpus = spec.node.gpus
        most = spec.scale.max_nodes or row.target_nodes  # automatic scale: its maximum
        found = (ws.id, ClusterRef(row.id, row.name, most, gpus), experiment_id)
        if experiment_id is not None:
            with self._lock:
                self._entries[key] = found
        return found
