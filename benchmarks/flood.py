"""One user floods the API with submissions; how fast does another user's ``job list`` answer meanwhile?

    python benchmarks/flood.py [--seconds 20] [--flooders 8]

For each server setting (the per-user limits off, then the defaults), in the same process: a real
server with a 2-node cluster; user ``flood`` submits ``true`` jobs from ``--flooders`` threads as
fast as the server answers, for ``--seconds``; meanwhile user ``reader`` lists 100 jobs of its own
experiment every 50 ms. Prints the reader's latency (p50, p99) beside its latency with no flood,
and how many of the flood's submissions were accepted (201) and refused (429).

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import bench_server, pct
from corral.client.client import Client
from corral.core.errors import TooManyRequests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def reads(client: Client, until: float) -> list[float]:
    latencies = []
    while time.monotonic() < until:
        t0 = time.perf_counter()
        client.list_jobs(limit=100)
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    return latencies


def run(label: str, settings: dict[str, str], seconds: float, flooders: int) -> None:
    port = free_port()
    with bench_server("corral-flood-", port, "flood", settings) as (_home, admin):
        admin.create_cluster({"name": "local", "scale": {"nodes": 2}})
        server = f"http://127.0.0.1:{port}"
        flood_token = admin.create_user("flood").token
        reader = Client(server=server, token=admin.create_user("reader").token, experiment="reads")
        for _ in range(100):
            reader.create_job({"cluster": "local", "custom": {"command": "true"}})
        quiet = reads(reader, time.monotonic() + 2)
        counts = {"accepted": 0, "refused": 0}
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def flood() -> None:
            # A hostile client: it does not wait as told (the SDK's default would).
            with Client(server=server, token=flood_token, experiment="flood", retries_when_limited=0) as c:
                while time.monotonic() < stop:
                    try:
                        c.create_job({"cluster": "local", "custom": {"command": "true"}})
                        key = "accepted"
                    except TooManyRequests:
                        key = "refused"
                    with lock:
                        counts[key] += 1

        with ThreadPoolExecutor(flooders) as pool:
            for _ in range(flooders):
                pool.submit(flood)
            loud = reads(reader, stop)
        reader.close()
    print(f"  {label}")
    print(f"    reader's job list, no flood:   p50 {pct(quiet, 0.5):7.1f} ms   p99 {pct(quiet, 0.99):7.1f} ms")
    print(f"    reader's job list, flooded:    p50 {pct(loud, 0.5):7.1f} ms   p99 {pct(loud, 0.99):7.1f} ms")
    print(f"    flood: {counts['accepted']} accepted, {counts['refused']} refused (429) in {seconds:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flooders", type=int, default=8)
    args = parser.parse_args()
    print(f"flood benchmark: {args.flooders} submitting threads for {args.seconds:g} s against one reader")
    off = {"CORRAL_SUBMIT_RATE": "0", "CORRAL_MAX_QUEUED_JOBS_PER_USER": "0"}
    run("per-user limits off (the baseline)", off, args.seconds, args.flooders)
    run("default limits (submit_rate 50/s, burst 1000, 10,000 queued)", {}, args.seconds, args.flooders)
    run("tight limits (submit_rate 20/s, burst 100)", {"CORRAL_SUBMIT_RATE": "20", "CORRAL_SUBMIT_BURST": "100"},
        args.seconds, args.flooders)  # fmt: skip


if __name__ == "__main__":
    main()
