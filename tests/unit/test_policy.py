from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.scheduler.policy import FreeNode, QueuedJob, Snapshot, place_jobs


def q(job_id: int, priority: int = 1, nodes: int = 1, cluster: int = 1) -> QueuedJob:
    return QueuedJob(job_id=job_id, cluster_id=cluster, priority=priority, seq=job_id, node_count=nodes)


def free(count: int, cluster: int = 1, start: int = 0) -> list[FreeNode]:
    return [FreeNode(node_id=cluster * 1000 + i, cluster_id=cluster, index=i) for i in range(start, start + count)]


def test_priority_then_fifo() -> None:
    snapshot = Snapshot(
        queued=[q(1, priority=0), q(2, priority=1), q(3, priority=2), q(4, priority=1)], free_nodes=free(3)
    )
    assert [p.job_id for p in place_jobs(snapshot)] == [3, 2, 4]


def test_gang_takes_all_nodes_or_waits() -> None:
    placements = place_jobs(Snapshot(queued=[q(1, nodes=3)], free_nodes=free(2)))
    assert placements == []
    placements = place_jobs(Snapshot(queued=[q(1, nodes=3)], free_nodes=free(3)))
    assert len(placements[0].node_ids) == 3


def test_head_of_line_blocks_smaller_jobs_behind_it() -> None:
    placements = place_jobs(Snapshot(queued=[q(1, nodes=4), q(2, nodes=1)], free_nodes=free(2)))
    assert placements == []


def test_clusters_are_independent() -> None:
    snapshot = Snapshot(queued=[q(1, nodes=4, cluster=1), q(2, cluster=2)], free_nodes=free(2, 1) + free(1, 2))
    assert [p.job_id for p in place_jobs(snapshot)] == [2]


def test_lowest_node_index_first() -> None:
    placements = place_jobs(Snapshot(queued=[q(1, nodes=2)], free_nodes=list(reversed(free(4)))))
    assert placements[0].node_ids == (1000, 1001)


jobs_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), st.integers(1, 3)), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(jobs=jobs_strategy, free_counts=st.lists(st.integers(0, 8), min_size=3, max_size=3))
def test_placement_invariants(jobs: list[tuple[int, int, int]], free_counts: list[int]) -> None:
    queued = [q(i, priority=p, nodes=n, cluster=c) for i, (p, n, c) in enumerate(jobs)]
    nodes = [node for c, count in enumerate(free_counts, start=1) for node in free(count, c)]
    placements = place_jobs(Snapshot(queued=queued, free_nodes=nodes))
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
