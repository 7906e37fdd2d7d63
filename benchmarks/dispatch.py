"""Dispatch throughput and latency of trivial jobs through the API, beside the subprocess floor.

    python benchmarks/dispatch.py [--jobs 1000] [--nodes 8] [--concurrency 8] [--as-user]

Starts a real server (temporary home, SQLite unless --database-url), creates a
local cluster of one-cpu nodes, submits N ``true`` jobs through the REST API
from several threads and waits for all of them. Prints:

- the floor: the same N commands run with ``subprocess.run`` in a loop here;
- the floor with a job's files: the same, each command first given what the local backend makes for every job
  (its folders, in the layout of DESIGN §7, and its wrapper, which writes its logs and its exit record), in the
  server's home: what this machine's filesystem costs a job (creating a folder costs 4 µs on tmpfs, and 20 to
  800 µs on this project's ext4, from one minute to the next);
- the submission rate and the end-to-end throughput (first submit → last completion);
- submit→running and submit→succeeded latency (p50, p99), from the server's timestamps (with ``--rate``, at a
  steady rate the server keeps up with; without it the submitters outrun the nodes and these are queueing time);
- submit→succeeded for one job at a time on an idle cluster, as the client sees it;
- CPU per job: the server's (its own process and, where the control loop runs in one of its own, that process's:
  ``CORRAL_LOOP_PROCESS``), its job processes', its metrics reader's and this client's;
- the server's resident memory over the run, and its peak (its loop's process included).

With ``--as-user`` the jobs are submitted by a user who is not an admin (a contributor of the workspace): where
the server runs as root, each of their processes runs as that user's own Unix account.

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corral.client.client import Client


def files_floor(root: Path, n: int) -> float:
    """Jobs/s of ``n`` ``true`` commands run one at a time, each with its job's folders and wrapper (as the
    local backend launches it, through the same functions)."""
    from corral.backends.local.backend import lay_out, spawn_wrapper
    from corral.launch.layout import JobLayout, node_job_paths, rank_exit

    env = dict(os.environ)
    t0 = time.perf_counter()
    for i in range(n):
        uid = f"{i:032x}"
        job = JobLayout.under(root / "jobs", "default", "bench", f"job-{i}", uid)
        workdir = node_job_paths(str(root / "node"), uid)["job_temp"]
        attempt, logs = job.attempt_dir(1), job.logs_dir(1)
        lay_out(None, within=root, dirs=(attempt, logs, job.shared, job.checkpoints, workdir))
        out, err = job.log(1, "stdout", 0), job.log(1, "stderr", 0)
        spawn_wrapper(None, env, rank_exit(attempt, 0), workdir, "true", out, err).wait()
    return n / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """CPU seconds of a process: (user, system, its reaped children's), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick, (int(fields[13]) + int(fields[14])) / tick


def child_process(server: int, module: str) -> int | None:
    """The pid of the server's child running ``python -m module``, or None."""
    for children in Path(f"/proc/{server}/task").glob("*/children"):
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                if module.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
    return None


def loop_process(server: int) -> int | None:
    """The pid of the server's control loop process (``CORRAL_LOOP_PROCESS``), or None where the loop is a thread."""
    return child_process(server, "corral.server.loop_process")


def server_cpu_seconds(server: int) -> tuple[float, float, float, float, float, float]:
    """(user, system) of the server's process, (user, system) of its loop's process (0 where the loop is a
    thread), the CPU of the job processes either has reaped, and the CPU of its metrics reader."""
    user, system, reaped = cpu_seconds(server)
    loop = loop_process(server)
    loop_user, loop_system, loop_reaped = cpu_seconds(loop) if loop else (0.0, 0.0, 0.0)
    reader = child_process(server, "corral.server.metrics_reader")
    reader_cpu = sum(cpu_seconds(reader)[:2]) if reader else 0.0
    return user, system, loop_user, loop_system, reaped + loop_reaped, reader_cpu


def server_kib(server: int, field: str) -> int:
    """``field`` of /proc's status (VmRSS, VmHWM) of the server's process, plus its loop's process's."""
    loop = loop_process(server)
    return memory_kib(server, field) + (memory_kib(loop, field) if loop else 0)


def start_server(
    home: Path, port: int, database_url: str | None, settings: dict[str, str] | None = None, cpus: str | None = None
) -> subprocess.Popen[bytes]:
    """A server on ``home``; with ``cpus`` (``taskset`` list, e.g. ``0``), confined to those CPUs (its jobs too:
    they inherit its affinity)."""
    env = {**os.environ, "CORRAL_HOME": str(home), **(settings or {})}
    if database_url:
        env["CORRAL_DATABASE_URL"] = database_url
    log = open(home / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            *(["taskset", "-c", cpus] if cpus else []),
            sys.executable,
            "-m",
            "corral.server",
            "--home",
            str(home),
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with Client(server=f"http://127.0.0.1:{port}", token="") as probe:
                probe.health()
            return process
        except Exception:
            time.sleep(0.1)
    raise SystemExit("server did not start; see " + str(home / "server.log"))


@contextlib.contextmanager
def bench_server(
    prefix: str, port: int, experiment: str, settings: dict[str, str] | None = None
) -> Iterator[tuple[Path, Client]]:
    """A real server in a temporary home under your home directory, and a client of it; both go at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=Path.home()) as tmp:
        home = Path(tmp)
        server = start_server(home, port, None, settings)
        try:
            token = (home / "token").read_text().strip()
            with Client(server=f"http://127.0.0.1:{port}", token=token, experiment=experiment) as client:
                yield home, client
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-trials", type=int, default=30)
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--server-cpus", default=None, help="run the server (and so its jobs) on these CPUs only: taskset -c LIST"
    )
    parser.add_argument("--batch", type=int, default=1, help="jobs a submission (POST …/jobs/batch above 1)")
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="write py-spy's samples of the server during the dispatch (raw: one stack a line, with its count; "
        "benchmarks/profile_top.py summarises them); py-spy must be on PATH (pip install py-spy)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-wall", action="store_true",
        help="with --profile: every sample, waiting ones included (py-spy --idle), not only those holding the GIL",
    )  # fmt: skip
    parser.add_argument(
        "--as-user",
        action="store_true",
        help="submit as a contributor, not the admin (as root, their jobs run as their own Unix account; the "
        "home must then be where other accounts may pass, e.g. --home-parent /tmp)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="submit at this many jobs/s in all (paced, below what the server can take: the latencies are then "
        "Corral's, not the queue's); default: as fast as the submitters go",
    )
    parser.add_argument(
        "--home-parent",
        default=str(Path.home()),
        help="where the server's temporary home goes (default: your home, like ~/.corral; "
        "on some machines /tmp is far slower at creating directories)",
    )
    args = parser.parse_args()
    if not args.port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            args.port = probe.getsockname()[1]

    t0 = time.perf_counter()
    for _ in range(args.jobs):
        subprocess.run(["true"], check=True)
    floor = args.jobs / (time.perf_counter() - t0)

    accounts: list[str | None] = []
    with tempfile.TemporaryDirectory(prefix=".corral-bench-", dir=args.home_parent) as tmp:
        home = Path(tmp)
        if args.as_user:
            home.chmod(0o711)  # the server keeps it so: users' jobs pass through it to their own folders
        with_files = files_floor(home / "floor", args.jobs)
        shutil.rmtree(home / "floor")
        # The user's submission limits off: this measures dispatch, not admission (flood.py measures that).
        unlimited = {"CORRAL_SUBMIT_RATE": "0", "CORRAL_MAX_QUEUED_JOBS_PER_USER": "0"}
        server = start_server(home, args.port, args.database_url, unlimited, cpus=args.server_cpus)
        try:
            url = f"http://127.0.0.1:{args.port}"
            token = (home / "token").read_text().strip()
            client = Client(server=url, token=token, experiment="bench", timeout=120)
            client.create_cluster({"name": "bench", "node": {"cpus": 1}, "scale": {"nodes": args.nodes}})
            if args.as_user:
                made = client.create_user(f"bench-{os.getpid()}")
                accounts.append(made.unix_user)
                client.set_member(made.name, "contributor")
                client.close()
                token = made.token
                client = Client(server=url, token=token, experiment="bench", timeout=120)
            spec = {"cluster": "bench", "custom": {"command": "true"}}

            rss: list[int] = [server_kib(server.pid, "VmRSS")]
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(0.25):
                    rss.append(server_kib(server.pid, "VmRSS"))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            clients = [
                Client(server=url, token=token, experiment="bench", timeout=120) for _ in range(args.concurrency)
            ]

            paced_from = [0.0]

            def submit(i: int) -> list[str]:
                """The i-th submission: one job, or a batch of --batch jobs in one request."""
                c = clients[i % args.concurrency]
                if args.rate:  # paced: submission i is due i/rate seconds after the first
                    time.sleep(max(0.0, paced_from[0] + i * args.batch / args.rate - time.perf_counter()))
                if args.batch == 1:
                    return [c.create_job(spec).name]
                count = min(args.batch, args.jobs - i * args.batch)
                return [job.name for job in c.create_jobs([spec] * count)]

            profiler = None
            if args.profile:  # py-spy samples the server (all its threads, native frames off) while jobs go through
                profiler = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw",
                     "--output", str(args.profile), "--threads", "--nonblocking", "--subprocesses",
                     *(["--idle"] if args.profile_wall else ["--gil"])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1)  # attached
            server_cpu0 = server_cpu_seconds(server.pid)
            client_cpu0 = time.process_time()
            first_submit = time.time()
            paced_from[0] = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                submissions = -(-args.jobs // args.batch)
                names = [name for batch in pool.map(submit, range(submissions)) for name in batch]
            last_submit = time.time()
            client.wait_job(names[-1], timeout=600)  # a long poll, not a loop of polls
            server_cpu = [b - a for a, b in zip(server_cpu0, server_cpu_seconds(server.pid), strict=True)]
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                profiler.wait(timeout=60)
            client_cpu = time.process_time() - client_cpu0
            sampling.set()
            sampler.join()
            # The memory figures above leave out this listing of every job, a response of N jobs.
            for job in client.list_jobs(limit=args.jobs + 10):
                if not job.state.is_terminal:
                    assert client.wait_job(job.name, timeout=600).state.is_terminal, job.name
            jobs = client.list_jobs(limit=args.jobs + 10)
            bad = [j.name for j in jobs if j.state != "succeeded"]
            assert not bad, f"{len(bad)} jobs did not succeed: {bad[:5]}"
            created = [j.created_at.timestamp() for j in jobs]
            to_running = [j.started_at.timestamp() - c for j, c in zip(jobs, created, strict=True) if j.started_at]
            to_done = [j.ended_at.timestamp() - c for j, c in zip(jobs, created, strict=True) if j.ended_at]
            last_done = max(j.ended_at.timestamp() for j in jobs if j.ended_at)

            # One job at a time on an idle cluster, as a client sees it.
            single: list[float] = []
            for _ in range(args.latency_trials):
                t = time.perf_counter()
                job = client.create_job(spec)
                client.wait_job(job.name, timeout=60)
                single.append(time.perf_counter() - t)
            peak = server_kib(server.pid, "VmHWM")
            loop = loop_process(server.pid)
            for c in clients:
                c.close()
            client.close()
        finally:
            server.terminate()
            server.wait()
            for account in filter(None, accounts):  # the account the server made for the benchmark's user
                subprocess.run(["userdel", account], check=False, capture_output=True)

    n = args.jobs
    throughput = n / (last_done - first_submit)
    print(
        f"dispatch benchmark: {n} `true` jobs, {args.nodes} one-cpu local nodes, {args.concurrency} submitters, "
        f"{os.cpu_count()} cpus, database {'sqlite' if not args.database_url else args.database_url.split(':')[0]}"
        + (f", in batches of {args.batch}" if args.batch > 1 else "")
        + (f", paced at {args.rate:g} jobs/s" if args.rate else "")
        + (f", submitted by a contributor running as {accounts[0] or 'the server user'}" if args.as_user else "")
        + (", the control loop in its own process" if loop else ", the control loop a thread of the server")
    )
    print(f"  floor: subprocess.run loop          {floor:8.1f} jobs/s")
    print(f"  floor with a job's files            {with_files:8.1f} jobs/s   (its folders and wrapper, one at a time)")
    print(f"  submission rate                     {n / (last_submit - first_submit):8.1f} jobs/s")
    print(
        f"  end-to-end throughput               {throughput:8.1f} jobs/s   ({throughput / floor:.2f} x floor,"
        f" {throughput / with_files:.2f} x the floor with files)"
    )
    print(
        f"  submit->running    p50 {1000 * statistics.median(to_running):8.1f} ms"
        f"   p99 {1000 * pct(to_running, 0.99):8.1f} ms"
    )
    print(
        f"  submit->succeeded  p50 {1000 * statistics.median(to_done):8.1f} ms"
        f"   p99 {1000 * pct(to_done, 0.99):8.1f} ms"
    )
    print(
        f"  idle cluster, one job at a time (client-side, {len(single)} trials): "
        f"p50 {1000 * statistics.median(single):.1f} ms   p99 {1000 * pct(single, 0.99):.1f} ms"
    )
    per_job = [1000 * seconds / n for seconds in server_cpu]
    print(
        f"  CPU per job: server {per_job[0] + per_job[2]:.2f} ms user + {per_job[1] + per_job[3]:.2f} ms system"
        + (f" (its loop's process {per_job[2]:.2f} + {per_job[3]:.2f})" if loop else "")
        + f", its job processes {per_job[4]:.2f} ms, its metrics reader {per_job[5]:.2f} ms,"
        f" this benchmark's client {1000 * client_cpu / n:.2f} ms"
    )
    quarters = ", ".join(f"{rss[min(len(rss) - 1, q * len(rss) // 4)] / 1024:.0f}" for q in range(5))
    print(
        f"  server RSS at 0/25/50/75/100% of the run: {quarters} MiB;"
        f" peak {peak / 1024:.0f} MiB (after listing all jobs)" + (" (its two processes)" if loop else "")
    )


if __name__ == "__main__":
    main()
