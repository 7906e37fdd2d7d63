from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.scheduler.policy import (
    HIGH,
    LOW,
    NORMAL,
    PRIORITY,
    QUOTA,
    RESOURCES,
    FreeNode,
    QueuedJob,
    Quota,
    RunningJob,
    Snapshot,
    schedule,
)


def q(job_id: int, priority: int = 1, nodes: int = 1, cluster: int = 1) -> QueuedJob:
    return QueuedJob(job_id=job_id, cluster_id=cluster, priority=priority, seq=job_id, node_count=nodes)


def free(count: int, cluster: int = 1, start: int = 0) -> list[FreeNode]:
    return [FreeNode(node_id=cluster * 1000 + i, cluster_id=cluster, index=i) for i in range(start, start + count)]


def test_priority_then_fifo() -> None:
    snapshot = Snapshot(
        queued=[q(1, priority=0), q(2, priority=1), q(3, priority=2), q(4, priority=1)], free_nodes=free(3)
    )
    assert [p.job_id for p in schedule(snapshot).placements] == [3, 2, 4]


def test_gang_takes_all_nodes_or_waits() -> None:
    placements = schedule(Snapshot(queued=[q(1, nodes=3)], free_nodes=free(2))).placements
    assert placements == []
    placements = schedule(Snapshot(queued=[q(1, nodes=3)], free_nodes=free(3))).placements
    assert len(placements[0].node_ids) == 3


def test_head_of_line_blocks_smaller_jobs_behind_it() -> None:
    placements = schedule(Snapshot(queued=[q(1, nodes=4), q(2, nodes=1)], free_nodes=free(2))).placements
    assert placements == []


def test_clusters_are_independent() -> None:
    snapshot = Snapshot(queued=[q(1, nodes=4, cluster=1), q(2, cluster=2)], free_nodes=free(2, 1) + free(1, 2))
    assert [p.job_id for p in schedule(snapshot).placements] == [2]


def test_lowest_node_index_first() -> None:
    placements = schedule(Snapshot(queued=[q(1, nodes=2)], free_nodes=list(reversed(free(4))))).placements
    assert placements[0].node_ids == (1000, 1001)


jobs_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), st.integers(1, 3)), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(jobs=jobs_strategy, free_counts=st.lists(st.integers(0, 8), min_size=3, max_size=3))
def test_placement_invariants(jobs: list[tuple[int, int, int]], free_counts: list[int]) -> None:
    queued = [q(i, priority=p, nodes=n, cluster=c) for i, (p, n, c) in enumerate(jobs)]
    nodes = [node for c, count in enumerate(free_counts, start=1) for node in free(count, c)]
    placements = schedule(Snapshot(queued=queued, free_nodes=nodes)).placements
    by_id = {job.job_id: job for job in queued}
    node_cluster = {n.node_id: n.cluster_id for n in nodes}
    given_nodes = [n for p in placements for n in p.node_ids]
    assert len(given_nodes) == len(set(given_nodes)), "no node is given twice"
    for p in placements:
        job = by_id[p.job_id]
        assert len(p.node_ids) == job.node_count, "a job gets exactly its node count"
        assert all(node_cluster[n] == job.cluster_id for n in p.node_ids), "nodes come from the job's cluster"
    # Strict order: in each cluster, the placed jobs are a prefix of the ordered queue.
    for cluster in (1, 2, 3):
        ordered = sorted((j for j in queued if j.cluster_id == cluster), key=lambda j: (-j.priority, j.seq))
        placed = [p.job_id for p in placements if by_id[p.job_id].cluster_id == cluster]
        assert placed == [j.job_id for j in ordered[: len(placed)]]
        if len(placed) < len(ordered):
            used = sum(by_id[i].node_count for i in placed)
            assert ordered[len(placed)].node_count > free_counts[cluster - 1] - used, "the head could not fit"


# ---------------------------------------------------------------- fair share, quotas, backfill, preemption


def job(
    job_id: int,
    *,
    nodes: int = 1,
    priority: int = NORMAL,
    user: str = "u",
    ws: int = 1,
    wall: float | None = None,
    gpus: int = 0,
    since: float = 0.0,
) -> QueuedJob:
    return QueuedJob(job_id, 1, priority, job_id, nodes, user, ws, wall, gpus, since)


def running(
    job_id: int, nodes: int, *, started: float = 0.0, wall: float | None = None, priority: int = NORMAL, ws: int = 1
) -> RunningJob:
    return RunningJob(job_id, 1, priority, nodes, ws, started, wall)


def test_fair_share_least_usage_first_and_turns_within_a_pass() -> None:
    queued = [job(1, user="alice"), job(2, user="alice"), job(3, user="bob"), job(4, user="bob")]
    decision = schedule(Snapshot(queued=queued, free_nodes=free(3), usage={"alice": 100.0, "bob": 0.0}))
    assert [p.job_id for p in decision.placements] == [3, 1, 4], "bob first (less usage), then turns"
    assert decision.reasons == {2: RESOURCES}, "the first job that cannot start is the head"


def test_priority_beats_fair_share() -> None:
    queued = [job(1, user="heavy", priority=HIGH), job(2, user="light")]
    decision = schedule(Snapshot(queued=queued, free_nodes=free(1), usage={"heavy": 1e9}))
    assert [p.job_id for p in decision.placements] == [1]


def test_quota_waits_with_its_reason_and_blocks_no_one() -> None:
    queued = [job(1, nodes=2, ws=1), job(2, nodes=1, ws=2), job(3, nodes=1, ws=1, gpus=4)]
    snapshot = Snapshot(
        queued=queued,
        free_nodes=free(4),
        running=[running(9, 1, ws=1)],
        quotas={1: Quota(max_nodes=2, max_gpus=2)},
    )
    decision = schedule(snapshot)
    assert [p.job_id for p in decision.placements] == [2]
    assert decision.reasons == {1: QUOTA, 3: QUOTA}


def test_backfill_only_what_ends_before_the_head_could_start() -> None:
    # 4 nodes: 2 busy until t=100; the head needs 4, so it starts at 100 at the earliest.
    snapshot = Snapshot(
        queued=[job(1, nodes=4), job(2, wall=50), job(3, wall=500), job(4)],
        free_nodes=free(2),
        running=[running(9, 2, started=0, wall=100)],
        now=10,
    )
    decision = schedule(snapshot)
    assert [p.job_id for p in decision.placements] == [2]
    assert decision.backfilled == {2}
    assert decision.heads[1] == (1, 100)
    assert decision.reasons == {1: RESOURCES, 3: PRIORITY, 4: PRIORITY}


def test_backfill_on_nodes_the_head_will_not_need() -> None:
    # The head needs 3 of the 4 nodes at t=100: one node is extra, a long job may take it.
    snapshot = Snapshot(
        queued=[job(1, nodes=3), job(2, wall=10_000), job(3, wall=10_000)],
        free_nodes=free(2),
        running=[running(9, 2, started=0, wall=100)],
    )
    decision = schedule(snapshot)
    assert [p.job_id for p in decision.placements] == [2]
    assert decision.reasons[3] == PRIORITY


def test_no_backfill_when_the_head_start_is_unknown() -> None:
    snapshot = Snapshot(queued=[job(1, nodes=3), job(2, wall=1)], free_nodes=free(2), running=[running(9, 2)])
    decision = schedule(snapshot)
    assert decision.placements == [] and decision.heads[1] == (1, math.inf)


def test_high_job_preempts_low_jobs_after_waiting() -> None:
    run_low = [running(7, 1, started=5, priority=LOW), running(8, 1, started=9, priority=LOW)]
    base = {"queued": [job(1, priority=HIGH, since=0)], "free_nodes": [], "running": run_low, "now": 100}
    assert schedule(Snapshot(**base)).preempt == [], "off unless the cluster enables it"  # type: ignore[arg-type]
    assert schedule(Snapshot(**base, preempt_after={1: 200})).preempt == []  # type: ignore[arg-type]
    assert schedule(Snapshot(**base, preempt_after={1: 60})).preempt == [8], "the latest started"  # type: ignore[arg-type]
    normal = {**base, "queued": [job(1, priority=NORMAL)]}
    assert schedule(Snapshot(**normal, preempt_after={1: 60})).preempt == []  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties


def head_start(need: int, free_now: int, ends: list[tuple[float, int]], now: float) -> float:
    """Earliest time ``need`` nodes are free, if nothing else starts."""
    available = free_now
    if available >= need:
        return now
    for end, count in sorted(ends):
        available += count
        if available >= need:
            return max(end, now)
    return math.inf


queue_strategy = st.lists(
    st.tuples(
        st.integers(0, 2),  # priority
        st.integers(1, 4),  # nodes
        st.sampled_from(["a", "b", "c"]),  # user
        st.integers(1, 2),  # workspace
        st.one_of(st.none(), st.integers(1, 300)),  # wall clock
        st.integers(0, 2),  # gpus per node
    ),
    max_size=30,
)
running_strategy = st.lists(
    st.tuples(st.integers(1, 3), st.one_of(st.none(), st.integers(1, 300)), st.integers(1, 2)), max_size=4
)


@settings(max_examples=300, deadline=None)
@given(
    queue=queue_strategy,
    runs=running_strategy,
    free_count=st.integers(0, 8),
    quota_nodes=st.one_of(st.none(), st.integers(0, 8)),
    quota_gpus=st.one_of(st.none(), st.integers(0, 8)),
    usage=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(0, 1e6)),
)
def test_policy_properties(
    queue: list[tuple[int, int, str, int, int | None, int]],
    runs: list[tuple[int, int | None, int]],
    free_count: int,
    quota_nodes: int | None,
    quota_gpus: int | None,
    usage: dict[str, float],
) -> None:
    queued = [
        QueuedJob(i, 1, p, i, n, u, ws, float(w) if w else None, g) for i, (p, n, u, ws, w, g) in enumerate(queue)
    ]
    running_jobs = [
        RunningJob(1000 + i, 1, NORMAL, n, ws, 0.0, float(w) if w else None) for i, (n, w, ws) in enumerate(runs)
    ]
    nodes = free(free_count)
    quotas = {1: Quota(quota_nodes, quota_gpus)}
    decision = schedule(
        Snapshot(queued=queued, free_nodes=nodes, running=running_jobs, usage=usage, quotas=quotas, now=0.0)
    )
    by_id = {j.job_id: j for j in queued}
    given_nodes = [n for p in decision.placements for n in p.node_ids]
    assert len(given_nodes) == len(set(given_nodes)), "no node is given twice"
    assert set(given_nodes) <= {n.node_id for n in nodes}
    for p in decision.placements:
        assert len(p.node_ids) == by_id[p.job_id].node_count, "no job gets fewer (or more) nodes than it needs"
    placed = {p.job_id for p in decision.placements}
    assert placed.isdisjoint(decision.reasons) and placed | set(decision.reasons) == set(by_id), "one outcome each"
    # Quotas are never exceeded by what this pass starts.
    ws1 = [by_id[i] for i in placed if by_id[i].workspace_id == 1]
    used_nodes = sum(r.node_count for r in running_jobs if r.workspace_id == 1)
    used_gpus = sum(r.node_count * r.gpus_per_node for r in running_jobs if r.workspace_id == 1)
    if quota_nodes is not None and ws1:
        assert used_nodes + sum(j.node_count for j in ws1) <= quota_nodes
    if quota_gpus is not None and ws1:
        assert used_gpus + sum(j.node_count * j.gpus_per_node for j in ws1) <= quota_gpus
    # Backfill never delays the head: its earliest start is the same with or without the backfilled jobs.
    for _cluster, (head_id, _shadow) in decision.heads.items():
        head = by_id[head_id]
        ends = [(r.end, r.node_count) for r in running_jobs]
        before = [by_id[i] for i in placed if i not in decision.backfilled]
        ends_before = ends + [(j.wall_clock or math.inf, j.node_count) for j in before]
        free_before = free_count - sum(j.node_count for j in before)
        backfilled = [by_id[i] for i in decision.backfilled]
        assert all(j.wall_clock is not None for j in backfilled), "jobs without a wall clock never backfill"
        ends_after = ends_before + [(j.wall_clock or math.inf, j.node_count) for j in backfilled]
        free_after = free_before - sum(j.node_count for j in backfilled)
        assert head_start(head.node_count, free_after, ends_after, 0.0) <= head_start(
            head.node_count, free_before, ends_before, 0.0
        )
