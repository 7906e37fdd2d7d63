"""Scheduling policy v1, a pure function: ``place_jobs(snapshot) -> placements``.

Rules:
- jobs of a cluster are taken in order of priority (``high > normal > low``),
  then submission order (``seq``);
- a job takes ``node_count`` whole nodes at once (gang) or none;
- if the job at the head of a cluster's queue cannot start, nothing behind it
  starts on that cluster (strict order: no job is overtaken);
- nodes are given lowest index first; no node is given twice.

It imports nothing from the server, so it can be tested and benchmarked alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuedJob:
    job_id: int
    cluster_id: int
    priority: int
    seq: int
    node_count: int


@dataclass(frozen=True)
class FreeNode:
    node_id: int
    cluster_id: int
    index: int


@dataclass(frozen=True)
class Snapshot:
    queued: Sequence[QueuedJob]
    free_nodes: Sequence[FreeNode]


@dataclass(frozen=True)
class Placement:
    job_id: int
    node_ids: tuple[int, ...]


def place_jobs(snapshot: Snapshot) -> list[Placement]:
    free: dict[int, list[FreeNode]] = defaultdict(list)
    for node in snapshot.free_nodes:
        free[node.cluster_id].append(node)
    for nodes in free.values():
        nodes.sort(key=lambda n: n.index, reverse=True)  # pop() gives the lowest index
    queues: dict[int, list[QueuedJob]] = defaultdict(list)
    for job in snapshot.queued:
        queues[job.cluster_id].append(job)
    placements = []
    for cluster_id, queue in queues.items():
        nodes = free.get(cluster_id, [])
        queue.sort(key=lambda j: (-j.priority, j.seq))
        for job in queue:
            if job.node_count > len(nodes):
                break
            placements.append(Placement(job.job_id, tuple(nodes.pop().node_id for _ in range(job.node_count))))
    return placements
