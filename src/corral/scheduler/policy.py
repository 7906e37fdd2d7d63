"""The queue's policy, a pure function: ``schedule(snapshot) -> Decision``.

Per cluster, jobs are taken in this order:

- **priority** ``high > normal > low``;
- within a priority, **fair share** between users: the user with the least usage goes
  first (node-seconds, decayed over time as Slurm's fair share does; the caller gives
  the decayed figures). A job placed in this pass adds its own expected cost to its
  user's usage, so users take turns even within one pass; a user's jobs keep their
  submission order (``seq``).

Each job takes ``node_count`` whole nodes at once (gang) or none, lowest node index
first; no node is given twice. A job whose workspace would go over its **quota**
(nodes or GPUs in use at once) waits with reason ``Quota`` and blocks no one.

The first job that cannot start is the cluster's *head*: it waits with reason
``Resources``. Behind it, **EASY backfill**: a job may start on idle nodes only if
it cannot delay the head — it ends, by its ``max_wall_clock``, before the head's
*shadow time* (when enough nodes will be free for the head, from the running jobs'
wall clocks), or it uses only nodes the head will not need then. Jobs without a
wall clock never backfill; when the shadow time is unknown (a running job the head
needs nodes of has no wall clock), nothing backfills. Jobs that wait behind the
head have reason ``Priority``.

**Preemption** (only on clusters that give ``preempt_after``): a ``high`` head that
has waited that long takes the nodes of running ``low`` jobs, the most recently
started first, if that frees enough; those jobs are returned in ``Decision.preempt``
(the control loop requeues them).

It imports nothing from the server, so it can be tested and benchmarked alone.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HIGH, NORMAL, LOW = 2, 1, 0

PRIORITY = "Priority"
RESOURCES = "Resources"
QUOTA = "Quota"
#: Set by the control loop (not the policy): the head waits for nodes an automatic cluster is adding.
CLUSTER_SCALING = "ClusterScaling"


@dataclass(frozen=True, slots=True)
class QueuedJob:
    job_id: int
    cluster_id: int
    priority: int
    seq: int
    node_count: int
    user: str = ""
    workspace_id: int = 0
    #: ``limits.max_wall_clock`` in seconds; None: unknown (never backfilled).
    wall_clock: float | None = None
    gpus_per_node: int = 0
    #: When it last entered the queue (for ``preempt_after``).
    queued_since: float = 0.0


@dataclass(frozen=True, slots=True)
class RunningJob:
    job_id: int
    cluster_id: int
    priority: int
    node_count: int
    workspace_id: int = 0
    started_at: float = 0.0
    wall_clock: float | None = None
    gpus_per_node: int = 0
    #: Already being preempted: its nodes are on their way back.
    preempting: bool = False

    @property
    def end(self) -> float:
        return math.inf if self.wall_clock is None else self.started_at + self.wall_clock


@dataclass(frozen=True, slots=True)
class FreeNode:
    node_id: int
    cluster_id: int
    index: int


@dataclass(frozen=True)
class Quota:
    max_nodes: int | None = None
    max_gpus: int | None = None


@dataclass(frozen=True)
class Snapshot:
    queued: Sequence[QueuedJob]
    free_nodes: Sequence[FreeNode]
    running: Sequence[RunningJob] = ()
    #: User -> decayed usage in node-seconds.
    usage: Mapping[str, float] = field(default_factory=dict)
    #: Workspace id -> its quota.
    quotas: Mapping[int, Quota] = field(default_factory=dict)
    #: Cluster id -> seconds a high job waits before it may preempt low jobs (absent: never).
    preempt_after: Mapping[int, float] = field(default_factory=dict)
    now: float = 0.0
    #: What a placed job without a wall clock adds to its user's usage within the pass (node-seconds per node).
    charge: float = 3600.0


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: int
    node_ids: tuple[int, ...]


@dataclass
class Decision:
    placements: list[Placement] = field(default_factory=list)
    #: Why each queued job that was not placed waits.
    reasons: dict[int, str] = field(default_factory=dict)
    #: Running jobs to preempt (requeue) for a waiting high-priority head.
    preempt: list[int] = field(default_factory=list)
    #: Placed jobs that started ahead of a blocked head (EASY backfill).
    backfilled: set[int] = field(default_factory=set)
    #: Cluster id -> (head job id, shadow time; inf when unknown).
    heads: dict[int, tuple[int, float]] = field(default_factory=dict)


def schedule(snapshot: Snapshot) -> Decision:
    decision = Decision()
    free: dict[int, list[FreeNode]] = defaultdict(list)
    for node in snapshot.free_nodes:
        free[node.cluster_id].append(node)
    queues: dict[int, list[QueuedJob]] = defaultdict(list)
    for job in snapshot.queued:
        queues[job.cluster_id].append(job)
    running: dict[int, list[RunningJob]] = defaultdict(list)
    nodes_used: dict[int, int] = defaultdict(int)
    gpus_used: dict[int, int] = defaultdict(int)
    for run in snapshot.running:
        running[run.cluster_id].append(run)
        nodes_used[run.workspace_id] += run.node_count
        gpus_used[run.workspace_id] += run.node_count * run.gpus_per_node
    usage = dict(snapshot.usage)
    for cluster_id in sorted(queues):
        nodes = sorted(free.get(cluster_id, ()), key=lambda n: n.index)
        _ClusterPass(snapshot, decision, usage, nodes_used, gpus_used, nodes, running[cluster_id]).run(
            queues[cluster_id], cluster_id
        )
    return decision


def _in_order(jobs: Iterable[QueuedJob], usage: dict[str, float]) -> Iterable[QueuedJob]:
    """Priority, then the user with the least usage (read again after every job), then seq."""
    levels: dict[int, dict[str, deque[QueuedJob]]] = defaultdict(lambda: defaultdict(deque))
    for job in sorted(jobs, key=lambda j: j.seq):
        levels[job.priority][job.user].append(job)
    for priority in sorted(levels, reverse=True):
        users = levels[priority]
        heap = [(usage.get(user, 0.0), queue[0].seq, user) for user, queue in users.items()]
        heapq.heapify(heap)
        while heap:
            _, _, user = heapq.heappop(heap)
            queue = users[user]
            yield queue.popleft()  # the caller may charge the user meanwhile
            if queue:
                heapq.heappush(heap, (usage.get(user, 0.0), queue[0].seq, user))


class _ClusterPass:
    def __init__(
        self,
        snapshot: Snapshot,
        decision: Decision,
        usage: dict[str, float],
        nodes_used: dict[int, int],
        gpus_used: dict[int, int],
        free: list[FreeNode],
        running: list[RunningJob],
    ) -> None:
        self.s = snapshot
        self.d = decision
        self.usage = usage
        self.nodes_used = nodes_used
        self.gpus_used = gpus_used
        self.free = free
        self.taken = 0  # free[:taken] are given
        self.running = running
        #: (end time, nodes) of the jobs that will free nodes: running ones and those placed in this pass.
        self.ends = [(r.end, r.node_count) for r in running]

    def run(self, jobs: list[QueuedJob], cluster_id: int) -> None:
        reasons = self.d.reasons
        seen: set[int] = set()
        head: QueuedJob | None = None
        for job in _in_order(jobs, self.usage):
            seen.add(job.job_id)
            if self._over_quota(job):
                reasons[job.job_id] = QUOTA
            elif job.node_count <= len(self.free) - self.taken:
                self._place(job)
            else:
                head = job
                break
        if head is None:
            return
        shadow, extra = self._shadow(head.node_count)
        self.d.heads[cluster_id] = (head.job_id, shadow)
        reasons[head.job_id] = RESOURCES
        self._maybe_preempt(head, cluster_id)
        self._backfill([j for j in jobs if j.job_id not in seen], shadow, extra)

    def _backfill(self, rest: list[QueuedJob], shadow: float, extra: int) -> None:
        """The jobs behind the head: those that cannot delay it start, the others wait (``Priority``)."""
        reasons = self.d.reasons
        now, quotas, usage = self.s.now, self.s.quotas, self.usage
        available = len(self.free) - self.taken
        # A first sieve, cheap tests first: most jobs of a long queue cannot backfill at all.
        candidates = []
        for job in rest:
            wall = job.wall_clock
            if (
                wall is None
                or shadow == math.inf
                or job.node_count > available
                or (now + wall > shadow and job.node_count > extra)  # extra only shrinks
            ):
                reasons[job.job_id] = QUOTA if job.workspace_id in quotas and self._over_quota(job) else PRIORITY
            else:
                candidates.append((-job.priority, usage.get(job.user, 0.0), job.seq, job))
        # Then queue order (usage as it stands now, this pass's placements included), only as far as needed.
        heapq.heapify(candidates)
        while candidates and len(self.free) > self.taken:
            job = heapq.heappop(candidates)[3]
            wall = job.wall_clock
            assert wall is not None
            if self._over_quota(job):
                reasons[job.job_id] = QUOTA
            elif job.node_count > len(self.free) - self.taken:
                reasons[job.job_id] = PRIORITY
            elif now + wall <= shadow:
                self._place(job)
                self.d.backfilled.add(job.job_id)
            elif job.node_count <= extra:
                extra -= job.node_count  # runs past the shadow time: only on nodes the head won't need
                self._place(job)
                self.d.backfilled.add(job.job_id)
            else:
                reasons[job.job_id] = PRIORITY
        for *_, job in candidates:  # no idle node left
            reasons[job.job_id] = QUOTA if self._over_quota(job) else PRIORITY

    def _over_quota(self, job: QueuedJob) -> bool:
        quota = self.s.quotas.get(job.workspace_id)
        if quota is None:
            return False
        if quota.max_nodes is not None and self.nodes_used[job.workspace_id] + job.node_count > quota.max_nodes:
            return True
        gpus = job.node_count * job.gpus_per_node
        return quota.max_gpus is not None and self.gpus_used[job.workspace_id] + gpus > quota.max_gpus

    def _place(self, job: QueuedJob) -> None:
        nodes = self.free[self.taken : self.taken + job.node_count]
        self.taken += job.node_count
        self.d.placements.append(Placement(job.job_id, tuple(n.node_id for n in nodes)))
        self.nodes_used[job.workspace_id] += job.node_count
        self.gpus_used[job.workspace_id] += job.node_count * job.gpus_per_node
        cost = job.wall_clock if job.wall_clock is not None else self.s.charge
        self.usage[job.user] = self.usage.get(job.user, 0.0) + job.node_count * cost
        end = math.inf if job.wall_clock is None else self.s.now + job.wall_clock
        self.ends.append((end, job.node_count))

    def _shadow(self, need: int) -> tuple[float, int]:
        """When ``need`` nodes will be free (by the wall clocks known), and how many more than that."""
        available = len(self.free) - self.taken
        for end, count in sorted(self.ends):
            if end == math.inf:
                break
            available += count
            if available >= need:
                return max(end, self.s.now), available - need
        return math.inf, 0

    def _maybe_preempt(self, head: QueuedJob, cluster_id: int) -> None:
        after = self.s.preempt_after.get(cluster_id)
        if after is None or head.priority < HIGH or self.s.now - head.queued_since < after:
            return
        coming = len(self.free) - self.taken + sum(r.node_count for r in self.running if r.preempting)
        if coming >= head.node_count:
            return  # enough nodes are already on their way back
        victims = []
        for run in sorted(self.running, key=lambda r: r.started_at, reverse=True):
            if run.priority == LOW and not run.preempting:
                victims.append(run.job_id)
                coming += run.node_count
                if coming >= head.node_count:
                    self.d.preempt.extend(victims)
                    return
