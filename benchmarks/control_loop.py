"""The control loop alone: how fast it runs trivial jobs when no HTTP request, client or other process shares
the machine with it.

    python benchmarks/control_loop.py [--jobs 2000] [--nodes 8] [--home-parent /dev/shm]

Builds the server's own context in this process (SQLite, the local backend: what ``corral server start`` builds,
without uvicorn), makes a local cluster of one-cpu nodes, stores N ``true`` jobs at once through the group
commit (batches of 100, as ``POST …/jobs/batch`` does), and waits until the loop has ended all of them. Prints
the throughput, the passes the loop made and the jobs a pass took on average, and this process's CPU per job
split by thread (user and system): the loop's own, the launchers', the exit watcher's, the group commit's.

``dispatch.py`` measures the whole path a user sees; this one tells the loop's part apart (it found the
launch plans' ``PurePath`` joins, a quarter of the loop's CPU). The home's filesystem matters: with the default
(your home) the launchers' system time is what making each job's folders costs there; ``--home-parent
/dev/shm`` takes the disk out. It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corral.core.models import JobCreate
from corral.scheduler.loop import Controller
from corral.server.access import Access
from corral.server.app import build_context
from corral.server.auth import HOME_ADMIN, Principal
from corral.server.services import commands
from corral.server.settings import Settings
from corral.store.tables import NodeRow

BATCH = 100


def cpu_by_thread() -> dict[str, tuple[float, float]]:
    """CPU seconds (user, system) of this process's threads, summed by name (``corral-launcher_3`` counts as
    ``corral-launcher``), from /proc."""
    names = {t.native_id: t.name.rstrip("_0123456789") for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[float, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other")
        user, system = out.get(name, (0.0, 0.0))
        out[name] = (user + int(fields[11]) / tick, system + int(fields[12]) / tick)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--home-parent", default=str(Path.home()), help="where the temporary home goes")
    args = parser.parse_args()

    passes = 0
    run_once = Controller.run_once

    def counted(self: Controller) -> None:
        nonlocal passes
        passes += 1
        run_once(self)

    Controller.run_once = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix=".corral-loop-", dir=args.home_parent) as tmp:
        settings = Settings(home=Path(tmp), submit_rate=0, max_queued_jobs_per_user=0)
        ctx = build_context(settings)
        ctx.controller.start()
        ctx.submissions.start()
        ctx.arrays.start()
        try:
            admin = Access(Principal(HOME_ADMIN, is_admin=True), "default", "admin")
            spec = {"name": "bench", "node": {"cpus": 1}, "scale": {"nodes": args.nodes}}
            commands.create_cluster(ctx, workspace="default", spec=spec, access=admin)
            while True:  # the nodes' setups (none here) end at once, but on the loop's thread
                with ctx.db.read() as session:
                    idle = session.query(NodeRow).filter(NodeRow.state == "idle").count()
                if idle == args.nodes:
                    break
                time.sleep(0.05)

            ended: set[int] = set()
            all_ended = threading.Event()
            tell = ctx.waiters.notify

            def notify(job_ids: list[int]) -> None:  # the loop's report of ended jobs, as `wait` hears it
                ended.update(job_ids)
                if len(ended) >= args.jobs:
                    all_ended.set()
                tell(job_ids)

            ctx.waiters.notify = notify  # type: ignore[method-assign]
            request = JobCreate.model_validate({"spec": {"cluster": "bench", "custom": {"command": "true"}}})
            counts = [min(BATCH, args.jobs - i) for i in range(0, args.jobs, BATCH)]
            before, passes_before = cpu_by_thread(), passes
            t0 = time.perf_counter()
            stored = [
                commands.submit_jobs(ctx, workspace="default", requests=[request] * n, access=admin) for n in counts
            ]
            for future in stored:
                future.result()
            stored_in = time.perf_counter() - t0
            all_ended.wait(600)
            wall = time.perf_counter() - t0
            after, made = cpu_by_thread(), passes - passes_before
        finally:
            ctx.arrays.stop()
            ctx.submissions.stop()
            ctx.controller.stop()
            ctx.metrics.stop()
            ctx.backends.close()
            ctx.db.dispose()

    n = args.jobs
    print(f"control loop alone: {n} `true` jobs on {args.nodes} one-cpu local nodes, {os.cpu_count()} cpus, "
          f"home under {args.home_parent}")  # fmt: skip
    print(f"  throughput                 {n / wall:8.1f} jobs/s   (all stored in {stored_in:.2f} s)")
    print(f"  passes                     {made:8d}         ({n / max(made, 1):.1f} jobs a pass)")
    total = [sum(after[k][i] - before.get(k, (0.0, 0.0))[i] for k in after) for i in (0, 1)]
    print(f"  CPU per job, this process  {1000 * total[0] / n:8.2f} ms user + {1000 * total[1] / n:.2f} ms system")
    for name in sorted(after, key=lambda k: -sum(after[k]) + sum(before.get(k, (0.0, 0.0)))):
        user, system = (after[name][i] - before.get(name, (0.0, 0.0))[i] for i in (0, 1))
        if user + system >= 0.01:
            print(f"    {name:22s}   {1000 * user / n:8.2f} ms user + {1000 * system / n:.2f} ms system")


if __name__ == "__main__":
    main()
