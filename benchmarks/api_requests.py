"""What one API request costs the server: CPU per request and requests per second, route by route, beside the floor.

    python benchmarks/api_requests.py [--requests 2000] [--concurrency 4] [--home-parent /dev/shm]

The floor is a bare FastAPI app served by uvicorn as Corral's server is (the same event loop and HTTP parser), with
two routes that do nothing: one a coroutine, run in the event loop, and one a plain function, which FastAPI hands
to its thread pool. Then a real Corral server (temporary home, SQLite unless ``--database-url``, its control loop
in its own process where the machine has two cores) answers the everyday reads and a submission: health, who am
I, a job, its events, a page of 100 jobs, a dry-run submission. Each route gets the same number of requests from
the same client threads; the server's CPU (all its processes, the control loop's included) is read from /proc
before and after. No route's figure is asserted: this prints, it never fails on time.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import cpu_seconds, server_cpu_seconds, start_server

FLOOR_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.get("/async")
async def in_loop() -> dict[str, str]:
    return {"status": "ok"}

@app.get("/sync")
def in_thread() -> dict[str, str]:
    return {"status": "ok"}
"""


def floor_cpu(pid: int) -> float:
    user, system, _ = cpu_seconds(pid)
    return user + system


def corral_cpu(pid: int) -> float:
    """The server's CPU: its process's, its control loop's process's and its metrics reader's."""
    user, system, loop_user, loop_system, _jobs, reader = server_cpu_seconds(pid)
    return user + system + loop_user + loop_system + reader


def wait_up(url: str, server: subprocess.Popen[bytes]) -> None:
    """Until the floor's app answers."""
    for _ in range(300):
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit(f"no answer from {url}")


Call = Callable[[httpx.Client, int], httpx.Response]


def measure(name: str, cpu: Callable[[], float], call: Call, headers: dict[str, str], args: argparse.Namespace) -> None:
    clients = [httpx.Client(headers=headers, timeout=60) for _ in range(args.concurrency)]
    numbers = iter(range(args.requests))
    lock = threading.Lock()
    failures: list[str] = []

    def work(client: httpx.Client) -> None:
        while True:
            with lock:
                i = next(numbers, None)
            if i is None or failures:
                return
            response = call(client, i)
            if response.status_code >= 300:
                failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    before, start = cpu(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, used = time.perf_counter() - start, cpu() - before
    for c in clients:
        c.close()
    if failures:
        sys.exit(f"{name}: {failures[0]}")
    rate, per_request = args.requests / wall, 1000 * used / args.requests
    print(f"  {name:36s} {rate:7.0f} requests/s   server CPU {per_request:5.2f} ms a request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=48231)
    parser.add_argument("--database-url", default=None, help="an empty database (default: SQLite in the home)")
    parser.add_argument("--home-parent", type=Path, default=None, help="where the temporary home goes (/dev/shm)")
    args = parser.parse_args()
    python = sys.executable
    print(f"API requests: {args.requests} a route from {args.concurrency} client threads, {os.cpu_count()} cpus")

    with tempfile.TemporaryDirectory(dir=args.home_parent) as tmp:
        (Path(tmp) / "floor_app.py").write_text(FLOOR_APP)
        floor = subprocess.Popen(
            [python, "-m", "uvicorn", "floor_app:app", "--port", str(args.port), "--log-level", "warning",
             "--no-access-log"],
            cwd=tmp,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{args.port}"
            wait_up(base + "/async", floor)
            print("floor: a bare FastAPI app under uvicorn")
            used = functools.partial(floor_cpu, floor.pid)
            measure("GET, a coroutine (event loop)", used, lambda c, i: c.get(base + "/async"), {}, args)
            measure("GET, a plain function (thread pool)", used, lambda c, i: c.get(base + "/sync"), {}, args)
        finally:
            floor.terminate()
            floor.wait()

        home = Path(tmp) / "home"
        home.mkdir()
        server = start_server(home, args.port, args.database_url, {"CORRAL_SUBMIT_RATE": "0"})
        try:
            api = f"http://127.0.0.1:{args.port}/api/v1"
            headers = {"Authorization": f"Bearer {(home / 'token').read_text().strip()}"}
            setup = httpx.Client(headers=headers, timeout=60)
            jobs = f"{api}/workspaces/default/experiments/default/jobs"
            cluster = {"name": "c", "scale": {"nodes": 2}}
            setup.post(f"{api}/workspaces/default/clusters", json=cluster).raise_for_status()
            for i in range(100):
                job = {"spec": {"name": f"j{i}", "cluster": "c", "custom": {"command": "true"}}}
                setup.post(jobs, json=job).raise_for_status()
            while setup.get(f"{jobs}/j99").json()["state"] not in ("succeeded", "failed"):
                time.sleep(0.2)
            time.sleep(1)  # the control loop is idle again
            print("Corral (the same client, a valid admin token)")

            def dry_run(c: httpx.Client, i: int) -> httpx.Response:
                job = {"spec": {"name": f"dry{i}", "cluster": "c", "custom": {"command": "true"}}}
                return c.post(f"{jobs}?dry_run=true", json=job)

            routes: list[tuple[str, Call]] = [
                ("GET /health", lambda c, i: c.get(api + "/health")),
                ("GET /users/me", lambda c, i: c.get(api + "/users/me")),
                ("GET a job", lambda c, i: c.get(f"{jobs}/j{i % 100}")),
                ("GET a job's events", lambda c, i: c.get(f"{jobs}/j{i % 100}/events")),
                ("GET a page of 100 jobs", lambda c, i: c.get(jobs, params={"limit": 100})),
                ("POST a job, dry run", dry_run),
            ]
            for name, call in routes:
                measure(name, functools.partial(corral_cpu, server.pid), call, headers, args)
            setup.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
