"""What Corral costs a DDP training run, beside the same run under ``torchrun``.

    python benchmarks/ddp_overhead.py [--rounds 5] [--epochs 100] [--hidden 256]

Runs ``examples/pytorch-ddp/train.py`` (gloo on the CPU, 2 processes on one node)
both ways, alternating, in the same process:

- through Corral: a real server (temporary home, SQLite), a one-node local cluster
  with 2 cpus, a ``pytorch`` job with ``processes_per_node: 2``; the clock starts
  just before the job is submitted;
- directly: ``torchrun --standalone --nproc-per-node 2 train.py``; the clock starts
  just before torchrun is started.

Prints, per way, the median training throughput (samples/s, as rank 0 measures it
from its first step to its last) and the median time from the start to the end of
the first training step; then their ratio and Corral's extra time to first step.
Both ways give each process one OpenMP thread (torchrun's default; Corral's is the
node's cpus divided by its processes). It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.dispatch import bench_server  # noqa: E402
from corral.client.client import Client  # noqa: E402

SCRIPT = ROOT / "examples" / "pytorch-ddp" / "train.py"


def parse(log: str) -> tuple[float, float]:
    """(first_step_at, throughput) from rank 0's output."""
    first = re.search(r"first_step_at=([\d.]+)", log)
    rate = re.search(r"throughput=([\d.]+) samples/s", log)
    if first is None or rate is None:
        raise SystemExit(f"train.py printed no figures:\n{log[-2000:]}")
    return float(first.group(1)), float(rate.group(1))


def run_corral(client: Client, args: list[str]) -> tuple[float, float]:
    spec = {
        "cluster": "bench",
        "pytorch": {"script": str(SCRIPT), "args": " ".join(args), "processes_per_node": 2},
        "env": {"PYTHONUNBUFFERED": "1"},
    }
    started = time.time()
    job = client.wait_job(client.create_job(spec).name, timeout=600)
    if job.state != "succeeded":
        raise SystemExit(f"Corral job failed: {job.error}\n{client.job_logs(job.name, stream='stderr')}")
    first, rate = parse(client.job_logs(job.name, rank=0))
    return first - started, rate


def run_torchrun(args: list[str], workdir: Path) -> tuple[float, float]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    started = time.time()
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(SCRIPT), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"torchrun failed:\n{done.stderr[-3000:]}")
    first, rate = parse(done.stdout)
    return first - started, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--port", type=int, default=8797)
    opts = parser.parse_args()
    train_args = ["--epochs", str(opts.epochs), "--hidden", str(opts.hidden), "--batch-size", str(opts.batch_size)]
    train_args.append("--out=")  # no model files: both ways do the same work

    with bench_server("corral-ddp-bench-", opts.port, "ddp-bench") as (home, client):
        client.create_cluster({"name": "bench", "node": {"cpus": 2}, "scale": {"nodes": 1}, "environment": "server"})
        corral: list[tuple[float, float]] = []
        direct: list[tuple[float, float]] = []
        for round_ in range(opts.rounds):
            corral.append(run_corral(client, train_args))
            direct.append(run_torchrun(train_args, home))
            print(
                f"round {round_ + 1}: corral first step {corral[-1][0]:.2f} s, {corral[-1][1]:.0f} samples/s;"
                f" torchrun first step {direct[-1][0]:.2f} s, {direct[-1][1]:.0f} samples/s",
                flush=True,
            )

    c_first = statistics.median(x[0] for x in corral)
    c_rate = statistics.median(x[1] for x in corral)
    d_first = statistics.median(x[0] for x in direct)
    d_rate = statistics.median(x[1] for x in direct)
    print()
    print(f"DDP, gloo, 2 processes on one node, {opts.epochs} epochs, hidden {opts.hidden}; medians of {opts.rounds}")
    print(f"  throughput        corral {c_rate:10.0f} samples/s   torchrun {d_rate:10.0f} samples/s")
    print(f"  ratio corral/torchrun: {c_rate / d_rate:.3f}   (target >= 0.97)")
    print(f"  time to first step corral {c_first:6.2f} s   torchrun {d_first:6.2f} s")
    print(f"  Corral's extra time to first step: {c_first - d_first:+.2f} s   (target <= 1 s)")


if __name__ == "__main__":
    main()
