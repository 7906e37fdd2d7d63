"""Job arrays: submitting a 10,000-task array, and running an array's tasks beside as many single jobs.

    python benchmarks/arrays.py [--tasks 10000] [--run 500] [--nodes 8]

Starts a real server (temporary home, SQLite, a local cluster of one-cpu nodes). Prints:

- the time to submit an array of TASKS tasks (median of 5; each terminated after), beside the time to submit one
  single job (target <= 200 ms);
- RUN ``true`` tasks of one array run end to end (submission to the array's end), in jobs per second, beside RUN
  single ``true`` jobs submitted at once (target: the same jobs/s).

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import bench_server
from benchmarks.ray_backend import free_port
from benchmarks.staging import throughput
from corral.client.client import Client


def submit_times(client: Client, tasks: int) -> None:
    singles, arrays = [], []
    for i in range(5):
        started = time.perf_counter()
        client.create_job({"cluster": "idle", "custom": {"command": "true"}}, name=f"single-{i}")
        singles.append(time.perf_counter() - started)
        started = time.perf_counter()
        job = client.create_job({"cluster": "idle", "custom": {"command": "true"}, "array": {"count": tasks}},
                                name=f"big-{i}")  # fmt: skip
        arrays.append(time.perf_counter() - started)
        assert job.array is not None and job.array.count == tasks
        client.terminate_job(job.name)
    print(f"  one single job:            {statistics.median(singles) * 1000:7.1f} ms (baseline)")
    print(f"  an array of {tasks:,} tasks: {statistics.median(arrays) * 1000:7.1f} ms")


def run_rates(client: Client, count: int) -> None:
    spec = {"cluster": "bench", "custom": {"command": "true"}}
    singles = throughput(client, spec, count)
    started = time.monotonic()
    job = client.create_job({**spec, "array": {"count": count}}, name="run")
    while client.get_job(job.name).state == "running":
        time.sleep(0.05)
    ended = client.get_job(job.name)
    assert ended.state == "succeeded", (ended.error, ended.array)
    rate = count / (time.monotonic() - started)
    print(f"  {count} single jobs at once:  {singles:6.1f} jobs/s (baseline)")
    print(f"  an array of {count} tasks:    {rate:6.1f} jobs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--run", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=8)
    args = parser.parse_args()
    with bench_server("corral-bench-arrays-", free_port(), "arrays") as (_home, client):
        client.create_cluster({"name": "bench", "scale": {"nodes": args.nodes}})
        client.create_cluster({"name": "idle", "scale": {"nodes": 1}})
        client.create_job({"cluster": "idle", "custom": {"command": "sleep 600"}}, name="holder")  # keeps it busy
        print("submission:")
        submit_times(client, args.tasks)
        print("running:")
        run_rates(client, args.run)
        client.terminate_job("holder")


if __name__ == "__main__":
    main()
