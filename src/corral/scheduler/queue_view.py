"""The queue as the control loop's policy sees it, kept in memory between passes.

The database stays the truth; this view is what a pass needs without reading it
back: the queued jobs (the API hands each one over once committed, the loop adds
the jobs it requeues, jobs terminated while queued are taken out, and the whole
queue is reloaded every :data:`RELOAD_SECONDS`), the wait reason last written for
each, the clusters' GPUs and preemption settings, the workspaces' quotas (reloaded
when one changes), and the users' fair-share usage.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Container, Mapping

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from corral.core.errors import UnloadableSpec
from corral.core.states import JobState
from corral.scheduler.lifecycle import NodeLifecycle
from corral.scheduler.policy import QueuedJob, Quota
from corral.scheduler.runs import queued_job
from corral.scheduler.usage import Usage
from corral.store.tables import ClusterRow, JobRow, WorkspaceRow, table
from corral.store.transitions import JobKey

log = logging.getLogger(__name__)

_JOBS = table(JobRow)
#: Why a job waits (built once: written for many jobs on many passes).
_SET_REASON = update(_JOBS).where(_JOBS.c.id == bindparam("_id")).values(reason=bindparam("_reason"))
#: Seconds between full reloads of the queue from the database (between them, the loop is told of changes).
RELOAD_SECONDS = 30.0


class QueueView:
    def __init__(self, nodes: NodeLifecycle, fairshare_half_life: float) -> None:
        self._nodes = nodes
        self.jobs: dict[int, QueuedJob] = {}
        #: The wait reason last written for each queued job.
        self._reasons: dict[int, str | None] = {}
        self._submitted: deque[QueuedJob] = deque()
        self._dequeued: deque[int] = deque()
        self._next_reload = 0.0
        #: Clusters or quotas changed: reload them before the next placement.
        self.stale = True
        #: Cluster id -> (GPUs per node, preempt_after).
        self.clusters: dict[int, tuple[int, float | None]] = {}
        #: Clusters whose stored spec does not load (id -> why, the cluster named): their queued jobs are failed.
        self.unloadable: dict[int, str] = {}
        #: Queued jobs of those clusters, for the pass to fail (id -> the job, why).
        self.doomed: dict[int, tuple[JobKey, str]] = {}
        self.quotas: dict[int, Quota] = {}
        self.usage = Usage(fairshare_half_life)

    def mark_stale(self) -> None:
        """Clusters or quotas changed: reload them before the next placement."""
        self.stale = True

    # Thread-safe (deque appends): called from the API's threads.
    def submitted(self, job: QueuedJob) -> None:
        self._submitted.append(job)

    def dequeued(self, job_id: int) -> None:
        self._dequeued.append(job_id)

    def drain_dequeued(self) -> None:
        while self._dequeued:
            self.remove(self._dequeued.popleft())

    def remove(self, job_id: int) -> None:
        """Out of the queue: placed, or no longer queued."""
        self.jobs.pop(job_id, None)
        self._reasons.pop(job_id, None)

    def preempt_after(self) -> dict[int, float]:
        return {c: after for c, (_, after) in self.clusters.items() if after is not None}

    def load_policy(self, session: Session) -> None:
        """Clusters (GPUs, preemption, automatic scale) and quotas, after one of them changed."""
        if not self.stale:
            return
        self.stale = False
        self.clusters, self._nodes.auto, self.unloadable = {}, {}, {}
        for cluster in session.scalars(select(ClusterRow)):
            try:
                spec = cluster.parsed
            except UnloadableSpec as exc:  # one such cluster must not stop every pass: it is left out
                log.error("%s: its queued jobs fail, its nodes stay as they are", exc.message)
                self.unloadable[cluster.id] = exc.message
                continue
            self.clusters[cluster.id] = (spec.node.gpus, spec.preempt_after)
            if spec.scale.is_auto:
                self._nodes.auto[cluster.id] = spec.scale
        self.quotas = {
            ws_id: Quota(max_nodes, max_gpus)
            for ws_id, max_nodes, max_gpus in session.execute(
                select(WorkspaceRow.id, WorkspaceRow.max_nodes, WorkspaceRow.max_gpus)
            )
            if max_nodes is not None or max_gpus is not None
        }
        if self.unloadable:  # their queued jobs are found by a reload, in this pass
            self._next_reload = 0.0

    def take_doomed(self) -> dict[int, tuple[JobKey, str]]:
        """The queued jobs of clusters whose stored spec does not load, found since the last call."""
        doomed, self.doomed = self.doomed, {}
        return doomed

    def refresh(self, session: Session, now: float, running: Container[int]) -> None:
        """Take in what was submitted or requeued, or reload the whole queue now and then."""
        if now < self._next_reload:
            while self._submitted:
                job = self._submitted.popleft()
                if job.job_id not in running:  # a full reload may have seen it, and placed it, first
                    self.jobs[job.job_id] = job
                    self._reasons.setdefault(job.job_id, None)
                if job.cluster_id not in self.clusters:
                    # A cluster made after this pass loaded the policy (a pass already under way when the
                    # request that made it committed): load it now, so the job is judged by it in this pass
                    # (an automatic cluster at 0 nodes grows for it), not as Resources.
                    self.stale = True
            self.load_policy(session)
            return
        self._next_reload = now + RELOAD_SECONDS
        self._submitted.clear()
        self.jobs.clear()
        self._reasons.clear()
        query = select(
            JobRow.id,
            JobRow.name,
            JobRow.cluster_id,
            JobRow.priority,
            JobRow.node_count,
            JobRow.submitted_by,
            JobRow.workspace_id,
            JobRow.wall_clock,
            JobRow.queued_at,
            JobRow.created_at,
            JobRow.reason,
        ).where(JobRow.state == JobState.QUEUED)
        for row in session.execute(query):
            if row.cluster_id is None:
                continue
            if row.cluster_id in self.unloadable:
                self.doomed[row.id] = (JobKey(row.id, row.name, JobState.QUEUED), self.unloadable[row.cluster_id])
                continue
            if row.cluster_id not in self.clusters:
                # A cluster made since the policy was loaded: reload both at the next pass.
                self.stale, self._next_reload = True, 0.0
                continue
            self.jobs[row.id] = queued_job(
                job_id=row.id,
                cluster_id=row.cluster_id,
                priority=row.priority,
                node_count=row.node_count,
                user=row.submitted_by,
                workspace_id=row.workspace_id,
                wall_clock=row.wall_clock,
                gpus_per_node=self.clusters[row.cluster_id][0],
                queued_since=row.queued_at if row.queued_at is not None else row.created_at,
            )
            self._reasons[row.id] = row.reason

    def write_reasons(self, session: Session, reasons: Mapping[int, str]) -> None:
        """Record why jobs wait, writing only the reasons that changed."""
        changed = {j: r for j, r in reasons.items() if self._reasons.get(j) != r}
        if changed:
            session.connection().execute(_SET_REASON, [{"_id": j, "_reason": r} for j, r in changed.items()])
            self._reasons.update(changed)
