"""The Ray backend on separate hosts, beside the local backend and beside torchrun by hand.

    sudo .venv/bin/python benchmarks/ray_backend.py [--trials 20] [--rounds 3] [--epochs 20]

Brings up ``scripts/netns-cluster.sh`` (3 hosts: network namespaces on 198.18.0.0/24, each a Ray worker with
its own node disk; root needed) and two real servers (temporary homes, SQLite): one on the local backend with a
2-node cluster, one on the Ray hosts with a 2-node ``backend: ray`` cluster. It prints, in the same run:

- a 2-node ``true`` job, one at a time: submit→running and submit→succeeded (the server's timestamps, p50 and
  p90), on ``ray`` and on ``local``;
- ``examples/pytorch-ddp/train.py`` on 2 hosts x 2 processes (gloo): training throughput through Corral on
  Ray beside the same script started by hand with ``torchrun`` on the same two hosts (``ip netns exec``),
  alternating, median of the rounds;
- node loss: a 2-node job runs on a 3-node cluster; the Ray processes of one of its hosts are SIGKILLed; the
  time until the job runs again (its second attempt started) on the other hosts.

Figures only: it never fails on time.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.dispatch import bench_server, pct  # noqa: E402
from corral.client.client import Client  # noqa: E402

SCRIPT = ROOT / "examples" / "pytorch-ddp" / "train.py"
NETNS = ROOT / "scripts" / "netns-cluster.sh"
NODE_ROOT = "/var/lib/corral-node"
HOSTS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_nodes(client: Client, cluster: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while [n.state for n in client.list_nodes(cluster)] != ["idle"] * count:
        if time.monotonic() > deadline:
            raise SystemExit(f"cluster {cluster} never had {count} idle nodes")
        time.sleep(0.2)


def latencies(client: Client, cluster: str, trials: int) -> tuple[list[float], list[float]]:
    running, succeeded = [], []
    for _ in range(trials):
        job = client.wait_job(
            client.create_job({"cluster": cluster, "node_count": 2, "custom": {"command": "true"}}).name
        )
        if job.state != "succeeded" or job.started_at is None or job.ended_at is None:
            raise SystemExit(f"a trivial job did not succeed: {job.error}")
        running.append((job.started_at - job.created_at).total_seconds() * 1000)
        succeeded.append((job.ended_at - job.created_at).total_seconds() * 1000)
    return running, succeeded


def throughput(log: str) -> float:
    found = re.search(r"throughput=([\d.]+) samples/s", log)
    if found is None:
        raise SystemExit(f"train.py printed no throughput:\n{log[-2000:]}")
    return float(found.group(1))


def ddp_corral(client: Client, cluster: str, epochs: int) -> float:
    spec = {
        "cluster": cluster,
        "node_count": 2,
        "pytorch": {"script": str(SCRIPT), "args": f"--epochs {epochs}", "processes_per_node": 2, "backend": "gloo"},
        "env": {"PYTHONUNBUFFERED": "1"},
    }
    job = client.wait_job(client.create_job(spec).name, timeout=900)
    if job.state != "succeeded":
        raise SystemExit(f"the DDP job failed: {job.error}\n{client.job_logs(job.name, stream='stderr')}")
    return throughput(client.job_logs(job.name, rank=0))


def ddp_by_hand(epochs: int, port: int) -> float:
    """torchrun on hosts 1 and 2, as a user would start it there (one torchrun per host)."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GLOO_SOCKET_IFNAME": "eth0", "OMP_NUM_THREADS": "1"}
    runs = []
    for rank in range(2):
        argv = [
            "ip", "netns", "exec", f"crl-h{rank + 1}", torchrun, "--nnodes", "2", "--nproc-per-node", "2",
            "--node-rank", str(rank), "--master-addr", HOSTS[0], "--master-port", str(port),
            str(SCRIPT), "--epochs", str(epochs), "--out", "",
        ]  # fmt: skip
        runs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=900) for run in runs]
    if any(run.returncode for run in runs):
        raise SystemExit(f"torchrun failed:\n{outputs[0][1][-2000:]}\n{outputs[1][1][-2000:]}")
    return throughput(outputs[0][0])


def node_loss(client: Client, cluster: str) -> float:
    client.resize_cluster(cluster, 3)
    wait_nodes(client, cluster, 3)
    spec = {"cluster": cluster, "node_count": 2, "custom": {"command": "sleep 5"}}
    job = client.create_job(spec, name=f"loss-{int(time.time())}")
    while client.get_job(job.name).state != "running":
        time.sleep(0.05)
    ips = {n.name: n.ip for n in client.list_nodes(cluster)}
    victim = ips[client.get_job(job.name).nodes[1]]
    killed = time.monotonic()
    subprocess.run(["bash", str(NETNS), "kill-ray", str(HOSTS.index(victim) + 1)], check=True, capture_output=True)
    while True:
        now = client.get_job(job.name)
        if len(now.attempts) >= 2 and now.state == "running":
            again = time.monotonic() - killed
            break
        if now.state in ("failed", "succeeded", "terminated"):
            raise SystemExit(f"the job ended instead of running again: {now.state} {now.error}")
        time.sleep(0.05)
    client.wait_job(job.name, timeout=120)
    subprocess.run(["bash", str(NETNS), "restart", str(HOSTS.index(victim) + 1)], check=True, capture_output=True)
    return again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="2-node jobs per backend for latency")
    parser.add_argument("--rounds", type=int, default=3, help="DDP runs per way")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the hosts are network namespaces: run as root")
    env = {**os.environ, "CORRAL_RAY_NODE_ROOT": NODE_ROOT}
    up = subprocess.run(["bash", str(NETNS), "up", "3"], capture_output=True, text=True, env=env)
    if up.returncode:
        raise SystemExit(up.stderr)
    address = up.stdout.split()[-1]
    try:
        with ExitStack() as stack:
            _, local = stack.enter_context(bench_server("corral-bench-local-", free_port(), "bench"))
            settings = {"CORRAL_RAY_ADDRESS": address, "CORRAL_RAY_NODE_ROOT": NODE_ROOT}
            _, ray = stack.enter_context(bench_server("corral-bench-ray-", free_port(), "bench", settings))
            server = {"environment": "server"}  # torch for the DDP figure: Corral's own environment
            local.create_cluster({"name": "local", "node": {"cpus": 2}, "scale": {"nodes": 2}, **server})
            ray.create_cluster(
                {"name": "hosts", "backend": "ray", "node": {"cpus": 2}, "scale": {"nodes": 2}, **server}
            )
            wait_nodes(local, "local", 2)
            wait_nodes(ray, "hosts", 2)
            latencies(ray, "hosts", 2)  # warm: the agents start on their machines
            figures = {"local": latencies(local, "local", args.trials), "ray": latencies(ray, "hosts", args.trials)}
            print(f"2-node `true` job, one at a time, {args.trials} trials (server timestamps):")
            for name, (running, succeeded) in figures.items():
                print(
                    f"  {name:5s}  submit->running p50 {pct(running, 0.5):6.1f} ms  p90 {pct(running, 0.9):6.1f} ms"
                    f"   submit->succeeded p50 {pct(succeeded, 0.5):6.1f} ms  p90 {pct(succeeded, 0.9):6.1f} ms"
                )
            corral, by_hand = [], []
            for round_ in range(args.rounds):
                corral.append(ddp_corral(ray, "hosts", args.epochs))
                by_hand.append(ddp_by_hand(args.epochs, 29400 + round_))
            c, h = statistics.median(corral), statistics.median(by_hand)
            print(f"DDP, 2 hosts x 2 processes, {args.epochs} epochs, median of {args.rounds}:")
            print(f"  through Corral on Ray {c:8.1f} samples/s   {[round(x) for x in corral]}")
            print(f"  torchrun by hand      {h:8.1f} samples/s   {[round(x) for x in by_hand]}")
            print(f"  ratio {c / h:.3f} (target >= 0.97)")
            again = node_loss(ray, "hosts")
            print(
                f"node loss: host's Ray SIGKILLed -> job running again on other hosts: {again:.1f} s (target <= 10 s)"
            )
    finally:
        subprocess.run(["bash", str(NETNS), "down"], capture_output=True, env=env)


if __name__ == "__main__":
    main()
