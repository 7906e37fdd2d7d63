"""Sweeps: what a trial costs over a bare job, and how fast a pruned trial is stopped.

    python benchmarks/sweeps.py [--trials 30] [--pruned 20]

Starts a real server (temporary home, SQLite, a 4-node local cluster). Prints, each beside its baseline from the
same run:

- a sweep of TRIALS trials run one at a time (a shell command that writes its objective to
  ``$CORRAL_METRICS_FILE``), per trial, beside the same command as TRIALS bare jobs submitted one after another
  and waited for (target: at most 50 ms more a trial);
- pruning latency: PRUNED trials, 4 at a time, each reporting with ``corral.runtime.report`` every 20 ms until
  its loss crosses a threshold pruner's bound; from that report to the SIGTERM the trial receives
  (target: p99 <= 1 s).

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import bench_server, pct
from benchmarks.ray_backend import free_port
from corral.client.client import Client

#: Reports loss 0 until step CROSS (the parameter), then 2.0: the threshold pruner's bound is 1.0. Notes when it
#: reported the crossing and when SIGTERM came, in a file of the benchmark's folder.
PRUNED = """
import json, os, signal, sys, time
from corral import runtime
cross, out = int(sys.argv[1]), sys.argv[2]
seen = {}
def stopped(signum, frame):
    seen["sigterm"] = time.time()
    json.dump(seen, open(out, "w"))
    os._exit(143)
signal.signal(signal.SIGTERM, stopped)
for step in range(1000):
    if step == cross:
        seen["crossed"] = time.time()
    runtime.report(step=step, loss=2.0 if step >= cross else 0.0)
    time.sleep(0.02)
"""


def wait_sweep(client: Client, name: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while client.get_sweep(name).state == "running":
        assert time.monotonic() < deadline, f"sweep {name} did not end"
        time.sleep(0.05)


def overhead(client: Client, trials: int) -> None:
    command = """echo "{\\"step\\": 0, \\"loss\\": ${x}}" >> "$CORRAL_METRICS_FILE\""""
    started = time.monotonic()
    for _ in range(trials):
        job = client.create_job({"cluster": "bench", "custom": {"command": command.replace("${x}", "0.5")}})
        assert client.wait_job(job.name, timeout=60).state == "succeeded"
    bare = (time.monotonic() - started) / trials
    spec = {
        "name": "overhead", "trial": {"cluster": "bench", "custom": {"command": command}},
        "parameters": {"x": {"type": "float", "low": 0, "high": 1}}, "objective": {"metric": "loss"},
        "sampler": {"type": "random", "seed": 1}, "max_trials": trials, "parallelism": 1,
    }  # fmt: skip
    started = time.monotonic()
    client.create_sweep(spec)
    wait_sweep(client, "overhead")
    swept = (time.monotonic() - started) / trials
    done = client.get_sweep("overhead")
    assert done.trial_counts == {"complete": trials}, done.trial_counts
    print(f"  bare job, one after another:  {bare * 1000:7.1f} ms a job (baseline)")
    print(f"  sweep trial, one at a time:   {swept * 1000:7.1f} ms a trial: {(swept - bare) * 1000:+.1f} ms")


def pruning(client: Client, trials: int, folder: Path) -> None:
    script = folder / "pruned.py"
    script.write_text(PRUNED)
    spec = {
        "name": "pruning",
        "trial": {"cluster": "bench", "custom": {"command": f"python3 {script} ${{cross}} {folder}/seen-${{cross}}"}},
        "parameters": {"cross": {"type": "int", "low": 5, "high": 5 + trials - 1}},
        "objective": {"metric": "loss"}, "sampler": {"type": "grid"},
        "pruner": {"type": "threshold", "upper": 1.0}, "max_trials": trials, "parallelism": 4,
    }  # fmt: skip
    client.create_sweep(spec)
    wait_sweep(client, "pruning")
    done = client.get_sweep("pruning")
    assert done.trial_counts == {"pruned": trials}, done.trial_counts
    waits = []
    for t in done.trials:
        seen = json.loads((folder / f"seen-{t.params['cross']}").read_text())
        waits.append(seen["sigterm"] - seen["crossed"])
    print(f"  {trials} trials pruned by a threshold, report -> SIGTERM: p50 {statistics.median(waits) * 1000:.0f} ms, "
          f"p99 {pct(waits, 0.99) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms")  # fmt: skip
    print("    (of which up to 100 ms is corral.runtime's buffer, 20 ms the trial's own step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--pruned", type=int, default=20)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="corral-sweeps-") as tmp,
        bench_server("corral-bench-sweeps-", free_port(), "sweeps") as (_home, client),
    ):
        Path(tmp).chmod(0o777)
        client.create_cluster({"name": "bench", "scale": {"nodes": 4}})
        print("overhead of a trial:")
        overhead(client, args.trials)
        print("pruning:")
        pruning(client, args.pruned, Path(tmp))


if __name__ == "__main__":
    main()
