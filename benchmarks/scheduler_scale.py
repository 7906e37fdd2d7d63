"""The queue's policy alone (``corral.scheduler.policy.schedule``) on large synthetic snapshots.

    python benchmarks/scheduler_scale.py [--nodes 10000] [--jobs 100000] [--repeat 3]

A snapshot: one cluster of N nodes with 8 GPUs each, half of them busy with running
jobs (70 % with a wall clock), and J queued jobs of mixed sizes (60 % one node, 25 %
2-4, 10 % 8, 5 % 16-64), priorities (10 % high, 70 % normal, 20 % low), 200 users
with random past usage, 20 workspaces of which 5 have quotas, 70 % with a wall
clock (so backfill has work to do). Prints the time of one full pass (median of
``--repeat``), the placements it makes and placements per second; then how the pass
time grows from N/10 to N nodes (J fixed) and from J/10 to J jobs (N fixed), beside
what n·log n growth would be. Snapshots are built before the clock starts: only the
policy is timed. It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corral.scheduler.policy import FreeNode, QueuedJob, Quota, RunningJob, Snapshot, schedule

GPUS = 8


def snapshot(nodes: int, jobs: int, seed: int = 1) -> Snapshot:
    rng = random.Random(seed)
    now = 1_000_000.0
    busy = nodes // 2
    running = []
    used = 0
    job_id = 0
    while used < busy:
        size = min(rng.choice((1, 1, 1, 2, 4, 8)), busy - used)
        wall = rng.choice((None, 3600.0, 7200.0, 14400.0, 600.0, 1800.0, 43200.0, None, 3600.0, 900.0))
        started = now - rng.uniform(0, 3000)
        running.append(RunningJob(job_id, 1, rng.choice((0, 1, 1, 2)), size, rng.randrange(20), started, wall, GPUS))
        used += size
        job_id += 1
    free = [FreeNode(100_000_000 + i, 1, i) for i in range(used, nodes)]
    queued = []
    for seq in range(jobs):
        r = rng.random()
        size = 1 if r < 0.6 else rng.randint(2, 4) if r < 0.85 else 8 if r < 0.95 else rng.randint(16, 64)
        p = rng.random()
        priority = 2 if p < 0.1 else 1 if p < 0.8 else 0
        wall = rng.choice((600.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0, 300.0)) if rng.random() < 0.7 else None
        queued.append(
            QueuedJob(
                job_id=10_000_000 + seq,
                cluster_id=1,
                priority=priority,
                seq=seq,
                node_count=size,
                user=f"user{rng.randrange(200)}",
                workspace_id=rng.randrange(20),
                wall_clock=wall,
                gpus_per_node=GPUS,
                queued_since=now - rng.uniform(0, 7200),
            )
        )
    usage = {f"user{i}": rng.uniform(0, 1e7) for i in range(200)}
    quotas = {ws: Quota(max_nodes=nodes // 8, max_gpus=nodes) for ws in range(5)}
    return Snapshot(
        queued=queued, free_nodes=free, running=running, usage=usage, quotas=quotas, preempt_after={1: 3600}, now=now
    )


def one_pass(snap: Snapshot, repeat: int) -> tuple[float, int]:
    times = []
    placed = 0
    for _ in range(repeat):
        started = time.perf_counter()
        decision = schedule(snap)
        times.append(time.perf_counter() - started)
        placed = len(decision.placements)
    return statistics.median(times), placed


def nlogn(n: float) -> float:
    return n * math.log2(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()

    snap = snapshot(opts.nodes, opts.jobs)
    seconds, placed = one_pass(snap, opts.repeat)
    print(
        f"policy pass: {opts.nodes} nodes ({len(snap.free_nodes)} free, {GPUS} GPUs each), "
        f"{len(snap.running)} running, {opts.jobs} queued jobs"
    )
    print(f"  full pass           {seconds * 1000:8.1f} ms   (target <= 1000 ms)")
    print(f"  placements          {placed:8d}")
    print(f"  placements/s        {placed / seconds:8.0f}     (target >= 10000)")

    print(f"\ngrowth with nodes (jobs fixed at {opts.jobs}):")
    base_n = max(10, opts.nodes // 10)
    rows = []
    for n in (base_n, opts.nodes // 4, opts.nodes // 2, opts.nodes):
        t, p = one_pass(snapshot(n, opts.jobs), opts.repeat)
        rows.append((n, t, p))
    for n, t, p in rows:
        print(
            f"  {n:7d} nodes  {t * 1000:8.1f} ms  {p:6d} placed  {p / t:8.0f}/s"
            f"  x{t / rows[0][1]:.2f} (n log n of nodes+jobs: x{nlogn(n + opts.jobs) / nlogn(base_n + opts.jobs):.2f})"
        )

    print(f"\ngrowth with jobs (nodes fixed at {opts.nodes}):")
    base_j = max(10, opts.jobs // 10)
    rows = []
    for j in (base_j, opts.jobs // 4, opts.jobs // 2, opts.jobs):
        t, p = one_pass(snapshot(opts.nodes, j), opts.repeat)
        rows.append((j, t, p))
    for j, t, p in rows:
        print(
            f"  {j:7d} jobs   {t * 1000:8.1f} ms  {p:6d} placed  {p / t:8.0f}/s"
            f"  x{t / rows[0][1]:.2f} (n log n: x{nlogn(j) / nlogn(base_j):.2f})"
        )


if __name__ == "__main__":
    main()
