"""Job environments: the first build, a cached reuse, and what a cached environment adds to a job's start.

    python benchmarks/environments.py [--trials 5] [--jobs 100]

Starts a real Corral server (temporary home, SQLite, a 2-node local cluster) and a wheelhouse of its own (a
small pure-Python package; uv installs from it with no index). Prints:

- the first build of an environment, as the builder times it, and a cached reuse (target: cached <= 200 ms);
- submit -> succeeded of a ``true`` job in the cached environment beside one without ``environment``, medians of
  TRIALS alternated: what the environment adds to a job's start;
- JOBS ``true`` jobs submitted at once with the cached environment and without: end-to-end throughput.

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.test_environments import make_wheel

from benchmarks.dispatch import bench_server
from benchmarks.ray_backend import free_port
from benchmarks.staging import run_job as run
from benchmarks.staging import throughput
from corral.client.client import Client


def builder_seconds(client: Client, name: str) -> tuple[str, float]:
    """How the job's environment was had, and the builder's time (0 where the shell linked it, no Python run)."""
    log = client.job_logs(name, stream="environment")
    if "cached (linked by the shell)" in log:
        return "cached", 0.0
    found = re.search(r"(built|cached) in ([0-9.]+) s", log)
    assert found, log
    return found.group(1), float(found.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-wheels-") as wheels:
        make_wheel(Path(wheels), "1.0")
        with bench_server("corral-bench-env-", free_port(), "environments") as (_home, client):
            client.create_cluster({"name": "bench", "scale": {"nodes": 2}})
            builds = []
            for _ in range(args.trials):  # each a new environment: a package list of its own
                fresh = {"packages": ["corraltestpkg==1.0", f"corraltestpkg; sys_platform != '{uuid.uuid4().hex}'"],
                         "find_links": [wheels], "no_index": True}  # fmt: skip
                name, _ = run(client, {"cluster": "bench", "environment": fresh, "custom": {"command": "true"}})
                builds.append(builder_seconds(client, name)[1])
            env = {"packages": ["corraltestpkg==1.0"], "find_links": [wheels], "no_index": True}
            with_env = {"cluster": "bench", "environment": env, "custom": {"command": "true"}}
            bare = {"cluster": "bench", "custom": {"command": "true"}}
            run(client, with_env)  # built once
            cached, cached_wall, bare_wall = [], [], []
            for _ in range(args.trials):
                name, wall = run(client, with_env)
                how, seconds = builder_seconds(client, name)
                assert how == "cached"
                cached.append(seconds)
                cached_wall.append(wall)
                bare_wall.append(run(client, bare)[1])
            rates: dict[str, list[float]] = {"env": [], "bare": []}
            for _ in range(3):
                rates["bare"].append(throughput(client, bare, args.jobs))
                rates["env"].append(throughput(client, with_env, args.jobs))
    print(f"first build (builder's time): median {statistics.median(builds):.2f} s of {args.trials}")
    print(f"cached reuse (builder's time): median {statistics.median(cached) * 1000:.0f} ms (target <= 200 ms)")
    added = statistics.median(cached_wall) - statistics.median(bare_wall)
    print(f"submit -> succeeded: cached environment {statistics.median(cached_wall) * 1000:.0f} ms, "
          f"none {statistics.median(bare_wall) * 1000:.0f} ms: +{added * 1000:.0f} ms")  # fmt: skip
    print(
        f"dispatch, {args.jobs} true jobs: no environment {statistics.median(rates['bare']):.0f} jobs/s, "
        f"cached environment {statistics.median(rates['env']):.0f} jobs/s (median of 3 each, alternated)"
    )


if __name__ == "__main__":
    main()
