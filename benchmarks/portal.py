"""The portal in Debian's Chromium (Playwright): how soon its pages are usable, how much they send, and a chart of
a long series.

    python benchmarks/portal.py [--jobs 10000] [--points 1000000] [--screenshots docs/images]

On a real server (SQLite) with JOBS jobs in its database (one real job, copied in SQL) and a sweep of 10 real
trials, it prints, each beside its baseline measured in the same run:

- the jobs page with JOBS jobs, opened cold and warm: when it is interactive (``domInteractive``) and loaded,
  beside the sign-in page (no data at all) and the API's page of 50 jobs read by a client (target: interactive
  <= 500 ms);
- the largest response of every page the portal has (overview, cluster, jobs, a job, metrics, sweeps, a sweep,
  usage), as the browser received it (target: none over 1 MiB);
- a chart of a POINTS-point series, from navigation to the chart drawn, beside a 1,000-point series on the same
  page (target <= 500 ms);
- the static assets, every file the portal serves from ``static/`` (target <= 200 KiB in all).

With ``--screenshots DIR`` it also saves the main pages at 1280 x 800 and the jobs page on a phone.
It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.portal import launch_chromium, seed_jobs

from benchmarks.dispatch import bench_server
from benchmarks.ray_backend import free_port
from corral.client.client import Client
from corral.server.portal.pages import STATIC

TRAINER = """
import sys, time
from corral.runtime import flush, report
x, kind = float(sys.argv[1]), sys.argv[2]
for step in range(20):
    report(step=step, loss=(x - 2) ** 2 + (0.5 if kind == "b" else 0) + 3 / (1 + step))
print(f"x={x} kind={kind} done")
flush()
"""
TALKER = """
import time
for i in range(100000):
    print(f"epoch {i // 50} batch {i % 50}: loss {1 / (1 + i):.5f}", flush=True)
    time.sleep(0.2)
"""


def timing(page: Any) -> tuple[float, float]:
    """Milliseconds from navigation to interactive, and to loaded."""
    t = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                      " return [n.domInteractive, n.loadEventEnd]; })()")  # fmt: skip
    return t[0], t[1]


def store_series(home: Path, job: str, name: str, count: int) -> None:
    from corral.server.services.metrics import Point, store_points
    from corral.store.db import Database
    from corral.store.tables import JobRow

    db = Database(f"sqlite:///{home / 'corral.db'}")
    with db.read() as session:
        job_id = session.query(JobRow.id).filter(JobRow.name == job).scalar()
    for start in range(0, count, 100_000):
        steps = range(start, min(count, start + 100_000))
        points = [Point(job_id, 1, 0, name, i, (i % 1000) / 1000 + (i == count // 3) * 50, 1.7e9 + i) for i in steps]
        with db.write() as session:
            store_points(session, points)
    db.dispose()


def prepare(home: Path, client: Client, args: argparse.Namespace) -> None:
    client.create_cluster({"name": "gpu-a", "scale": {"nodes": 4}})
    client.create_cluster({"name": "cpu-b", "scale": {"nodes": 2}})
    (home / "trainer.py").write_text(TRAINER)
    (home / "talker.py").write_text(TALKER)
    client.create_job({"cluster": "cpu-b", "custom": {"command": "true"}}, name="template")
    client.wait_job("template", timeout=60)
    started = time.monotonic()
    seed_jobs(f"sqlite:///{home / 'corral.db'}", "template", args.jobs, prefix="train-")
    print(f"  {args.jobs:,} jobs written in {time.monotonic() - started:.1f} s")
    client.create_sweep({
        "name": "tune", "max_trials": 10, "parallelism": 4,
        "trial": {"cluster": "gpu-a", "custom": {"command": f"{sys.executable} {home}/trainer.py ${{x}} ${{kind}}"}},
        "parameters": {"x": {"type": "float", "low": 0, "high": 4, "step": 1},
                       "kind": {"type": "choice", "values": ["a", "b"]}},
        "objective": {"metric": "loss", "mode": "min"}, "sampler": {"type": "grid"}, "pruner": {"type": "none"},
    })  # fmt: skip
    deadline = time.monotonic() + 300
    while client.get_sweep("tune").state == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    client.create_job({"cluster": "gpu-a", "custom": {"command": f"{sys.executable} {home}/talker.py"}}, name="talker")
    client.create_job({"cluster": "cpu-b", "custom": {"command": "sleep 600"}}, name="series")
    while client.get_job("series").state != "running":
        time.sleep(0.1)
    started = time.monotonic()
    store_series(home, "series", "long", args.points)
    store_series(home, "series", "short", 1000)
    print(f"  {args.points + 1000:,} points stored in {time.monotonic() - started:.1f} s")
    time.sleep(3)  # the talker has lines to show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=5, help="times each page is opened (medians printed)")
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    with bench_server("corral-bench-portal-", port, "default") as (home, client):
        origin = f"http://127.0.0.1:{port}"
        prepare(home, client, args)
        token = (home / "token").read_text().strip()
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            sizes: dict[str, int] = {}
            # Each response's body as received, once whole (a log's Server-Sent Events never end: not counted)
            page.on("requestfinished", lambda r: sizes.__setitem__(r.url, r.sizes()["responseBodySize"]))
            page.goto(origin + "/signin")
            signin = timing(page)
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            page.wait_for_load_state()

            print(f"jobs page with {args.jobs:,} jobs (medians of {args.trials}):")
            cold = warm = None
            interactive, loaded = [], []
            for trial in range(args.trials):
                if trial == 0:
                    page.goto(origin + "/w/default/jobs")
                    cold = timing(page)
                    continue
                page.goto(origin + "/w/default/jobs")
                page.wait_for_selector("#job-rows tr")
                i, ready = timing(page)
                interactive.append(i)
                loaded.append(ready)
            warm = (statistics.median(interactive), statistics.median(loaded))
            page.goto(origin + "/signin")
            signin_warm = timing(page)
            api = []
            for _ in range(args.trials):
                began = time.perf_counter()
                client.list_jobs(limit=50)
                api.append((time.perf_counter() - began) * 1000)
            assert cold is not None
            print(f"  cold: interactive {cold[0]:6.1f} ms, loaded {cold[1]:6.1f} ms (target: interactive <= 500 ms)")
            print(f"  warm: interactive {warm[0]:6.1f} ms, loaded {warm[1]:6.1f} ms")
            print(f"  baseline, the sign-in page (no data): cold interactive {signin[0]:.1f} ms, "
                  f"warm {signin_warm[0]:.1f} ms")  # fmt: skip
            print(f"  baseline, the API's first 50 jobs to a client: {statistics.median(api):.1f} ms")

            print("charts (medians):")
            for name, label in (("short", "1,000 points"), ("long", f"{args.points:,} points")):
                drawn = []
                for _ in range(args.trials):
                    page.goto(origin + "/w/default/metrics?job=default/series")
                    figure = page.wait_for_selector(f"figure[data-chart*='/metrics/{name}?'][data-drawn-at]")
                    assert figure is not None
                    drawn.append(float(figure.get_attribute("data-drawn-at") or 0))
                print(f"  {label:>17}: navigation to chart drawn {statistics.median(drawn):6.1f} ms"
                      f"{' (target <= 500 ms)' if name == 'long' else ' (baseline)'}")  # fmt: skip

            pages = ["/w/default", "/w/default/clusters/gpu-a", "/w/default/jobs", "/w/default/e/default/jobs/talker",
                     "/w/default/metrics?job=default/series", "/w/default/sweeps", "/w/default/e/default/sweeps/tune",
                     "/w/default/usage"]  # fmt: skip
            sizes.clear()
            for path in pages:
                page.goto(origin + path)
                page.wait_for_load_state("networkidle")
            largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
            print("largest responses of every page (target: none over 1 MiB):")
            for url, size in largest:
                print(f"  {size / 1024:8.1f} KiB  {url.removeprefix(origin)}")
            files = [p for p in STATIC.rglob("*") if p.is_file() and not p.name.endswith("LICENSE")]
            total = sum(p.stat().st_size for p in files)
            print(f"static assets: {len(files)} files, {total / 1024:.1f} KiB in all (target <= 200 KiB)")
            for p in sorted(files, key=lambda p: -p.stat().st_size):
                print(f"  {p.stat().st_size / 1024:6.1f} KiB  {p.relative_to(STATIC)}")

            if args.screenshots:
                shots(page, context, browser, origin, token, args.screenshots)
            browser.close()
        client.terminate_job("talker")
        client.terminate_job("series")


def shots(page: Any, context: Any, browser: Any, origin: str, token: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    named = (("overview", "/w/default"), ("cluster", "/w/default/clusters/gpu-a"), ("jobs", "/w/default/jobs"),
             ("job", "/w/default/e/default/jobs/talker"), ("metrics", "/w/default/metrics?job=default/series"),
             ("sweep", "/w/default/e/default/sweeps/tune"), ("usage", "/w/default/usage"))  # fmt: skip
    for name, path in named:
        page.goto(origin + path)
        page.wait_for_load_state("networkidle") if name != "job" else page.wait_for_timeout(2500)
        page.screenshot(path=str(folder / f"portal-{name}.png"))
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, device_scale_factor=2)
    small = phone.new_page()
    small.goto(origin + "/signin")
    small.fill("input[name=token]", token)
    small.click("button[type=submit]")
    small.goto(origin + "/w/default/e/default/jobs/talker")
    small.wait_for_timeout(2500)
    small.screenshot(path=str(folder / "portal-phone.png"))
    phone.close()
    print(f"screenshots in {folder}")


if __name__ == "__main__":
    main()
