"""Metrics: what reporting costs a job, how fast the server stores them, and reading a long series.

    python benchmarks/metrics.py [--reporters 100] [--rate 200] [--seconds 10] [--jobs 200] [--points 1000000]

Prints, each beside its baseline measured in the same run:

- ``corral.runtime.report`` per call (it queues; a thread writes), beside a call that does nothing and beside
  writing each report's line to the file at once;
- ingest: REPORTERS jobs each writing RATE points a second for SECONDS (one JSON line of two metrics every
  2/RATE s), on a real server (SQLite): points stored per second, and how long after the last was written it was
  stored (target >= 20,000 points/s);
- dispatch (JOBS ``true`` jobs on another cluster) while those jobs report, beside the same jobs writing the same
  lines to a file the server does not read (target: within 10 %);
- a series of POINTS points read downsampled to 1,000 through the API, beside a series of 1,000 read whole
  (target <= 300 ms).

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import bench_server, cpu_seconds
from benchmarks.ray_backend import free_port
from benchmarks.staging import throughput
from corral.client.client import Client

#: A reporting job: RATE points a second (two metrics a line) for SECONDS, to $CORRAL_METRICS_FILE or to a file
#: of its own (the baseline: the same work, nothing for the server to read).
REPORTER = """
import json, os, sys, time
rate, seconds, where = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
path = os.environ["CORRAL_METRICS_FILE"] if where == "metrics" else os.environ["CORRAL_JOB_TEMP"] + "/lines.jsonl"
lines, start, step = rate // 2, time.monotonic(), 0
with open(path, "a") as f:
    for tick in range(int(seconds * 10)):
        f.write("".join(json.dumps({"step": step + i, "loss": 1.0 / (step + i + 1), "acc": 0.5}) + "\\n"
                        for i in range(lines // 10)))
        f.flush()
        step += lines // 10
        time.sleep(max(0.0, start + (tick + 1) / 10 - time.monotonic()))
"""


def report_cost(calls: int) -> None:
    from corral import runtime

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CORRAL_METRICS_FILE"] = str(Path(tmp, "metrics.jsonl"))

        def nothing(step: int | None = None, **metrics: float) -> None:
            pass

        def at_once(step: int | None = None, **metrics: float) -> None:
            with open(Path(tmp, "at-once.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

        for name, call in (("nothing (a call)", nothing), ("runtime.report", runtime.report),
                           ("write each line at once", at_once)):  # fmt: skip
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                for i in range(calls):
                    call(step=i, loss=0.5, acc=0.25)
                best = min(best, time.perf_counter() - started)
            print(f"  {name:28} {best / calls * 1e6:8.2f} µs a call")
        runtime.flush()
        written = len(Path(os.environ["CORRAL_METRICS_FILE"]).read_text().splitlines())
        print(f"  (runtime.report wrote {written} lines for {3 * calls} calls)")
        del os.environ["CORRAL_METRICS_FILE"]


def server_pid(home: Path) -> int:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(home).encode() in cmdline.read_bytes() and b"corral.server" in cmdline.read_bytes():
                return int(cmdline.parent.name)
        except OSError:
            continue
    raise LookupError(f"no server of {home}")


def reporters(client: Client, count: int, rate: int, seconds: float, where: str, script: Path) -> list[str]:
    command = f"python3 {script} {rate} {seconds} {where}"
    return [client.create_job({"cluster": "reporters", "custom": {"command": command}}).name for _ in range(count)]


def stored_points(client: Client, names: list[str]) -> int:
    return sum(s.last_step + 1 for name in names for s in client.job_metrics(name))


def ingest_and_dispatch(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="corral-metrics-") as tmp,
        bench_server("corral-bench-metrics-", free_port(), "metrics") as (home, client),
    ):
        script = Path(tmp, "reporter.py")
        script.write_text(REPORTER)
        os.chmod(tmp, 0o755)
        pid = server_pid(home)
        client.create_cluster({"name": "reporters", "scale": {"nodes": args.reporters}})
        client.create_cluster({"name": "bench", "scale": {"nodes": 8}})
        expected = args.reporters * (args.rate // 2 // 10) * int(args.seconds * 10) * 2
        for where in ("file", "metrics"):  # the baseline first: the same jobs, lines the server does not read
            names = reporters(client, args.reporters, args.rate, args.seconds, where, script)
            deadline = time.monotonic() + 120
            while sum(client.get_job(n).state == "running" for n in names) < args.reporters:
                assert time.monotonic() < deadline, "the reporters did not all start"
                time.sleep(0.2)
            started, cpu = time.monotonic(), sum(cpu_seconds(pid)[:2])
            rate = throughput(client, {"cluster": "bench", "custom": {"command": "true"}}, args.jobs)
            for name in names:
                ended = client.wait_job(name, timeout=600)
                assert ended.state == "succeeded", (ended.error, client.job_logs(name, stream="stderr"))
            written = time.monotonic()
            if where == "metrics":
                while (stored := stored_points(client, names)) < expected:
                    assert time.monotonic() < written + 120, f"only {stored} of {expected} points stored"
                    time.sleep(0.1)
                done = time.monotonic()
                busy = sum(cpu_seconds(pid)[:2]) - cpu
                print(f"  ingest: {expected} points from {args.reporters} jobs in {done - started:.1f} s: "
                      f"{expected / (done - started):,.0f} points/s (written at {expected / (written - started):,.0f}"
                      f"/s); the last stored {done - written:.2f} s after the jobs ended")  # fmt: skip
                print(f"  dispatch while they report:          {rate:6.1f} jobs/s; server CPU {busy:.1f} s")
            else:
                busy = sum(cpu_seconds(pid)[:2]) - cpu
                print(f"  dispatch while they write a file:    {rate:6.1f} jobs/s; server CPU {busy:.1f} s (baseline)")


def long_series(args: argparse.Namespace) -> None:
    from corral.server.services.metrics import Point, store_points
    from corral.store.db import Database
    from corral.store.tables import JobRow

    with bench_server("corral-bench-series-", free_port(), "series") as (home, client):
        client.create_cluster({"name": "one", "scale": {"nodes": 1}})
        job = client.create_job({"cluster": "one", "custom": {"command": "sleep 600"}})
        while client.get_job(job.name).state != "running":
            time.sleep(0.1)
        db = Database(f"sqlite:///{home / 'corral.db'}")
        with db.read() as session:
            job_id = session.query(JobRow.id).filter(JobRow.name == job.name).scalar()
        began = time.monotonic()
        for name, count in (("long", args.points), ("short", 1000)):
            for start in range(0, count, 100_000):
                steps = range(start, min(count, start + 100_000))
                spiky = [Point(job_id, 1, 0, name, i, i % 1000 + (i == 123_457) * 1e6, 1.7e9 + i) for i in steps]
                with db.write() as session:
                    store_points(session, spiky)
        took = time.monotonic() - began
        print(f"  stored {args.points + 1000:,} points in {took:.1f} s (in-process, batches of 100k)")
        for name in ("short", "long"):
            times = []
            for _ in range(5):
                started = time.perf_counter()
                points = client.job_metric(job.name, name, max_points=1000)
                times.append(time.perf_counter() - started)
            spike = max(p.max for p in points.points)
            print(
                f"  {name:5} series of {points.total:>9,} points -> {len(points.points)} points: "
                f"median {statistics.median(times) * 1000:6.1f} ms, best {min(times) * 1000:6.1f} ms"
                f"{' (downsampled; its spike kept: max ' + format(spike, '.0f') + ')' if points.downsampled else ''}"
            )
        client.terminate_job(job.name)
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--reporters", type=int, default=100)
    parser.add_argument("--rate", type=int, default=200, help="points a second of each reporting job")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--points", type=int, default=1_000_000)
    args = parser.parse_args()
    print("report() per call:")
    report_cost(args.calls)
    print(f"{args.reporters} jobs reporting {args.rate} points/s each for {args.seconds:.0f} s:")
    ingest_and_dispatch(args)
    print("a long series, downsampled:")
    long_series(args)


if __name__ == "__main__":
    main()
