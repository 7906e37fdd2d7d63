"""The portal in a real browser (Debian's Chromium under Playwright) against a real server running real jobs.

Every test's page records each request it makes to another origin and each console error, and asserts at the
end that there were none."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerHandle, passable, running_server, until
from tests.portal import Watched, seed_jobs, sign_in, watch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    home = passable(tmp_path_factory.mktemp("portal"))
    with running_server(home, "sqlite", {"name": "local", "scale": {"nodes": 4}}) as handle:
        yield handle


@pytest.fixture
def page(browser: Any, portal: ServerHandle) -> Iterator[Watched]:
    """A signed-in admin's page at 1280 x 800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    watched = watch(context, portal.url)
    sign_in(watched.page, portal.url, portal.token)
    yield watched
    context.close()
    watched.clean()


def printer(tmp_path: Path, lines: int, pause: float) -> str:
    script = tmp_path / "printer.py"
    script.write_text(
        textwrap.dedent(f"""
            import sys, time
            for i in range({lines}):
                print(f"line {{i}}", flush=True)
                if i % 7 == 3:
                    print(f"warning {{i}}", file=sys.stderr, flush=True)
                time.sleep({pause})
        """)
    )
    return f"{sys.executable} {script}"


def test_signing_in_shows_the_workspace_its_cluster_and_its_nodes(browser: Any, portal: ServerHandle) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    w = watch(context, portal.url)
    w.page.goto(portal.url + "/w/default/clusters/local")
    assert "/signin" in w.page.url  # not signed in: the sign-in page, which comes back here after
    w.page.fill("input[name=token]", "not-a-token")
    w.page.click("button[type=submit]")
    assert "not valid" in w.page.inner_text(".error")
    w.expected_failure(401)
    w.page.fill("input[name=token]", portal.token)
    w.page.click("button[type=submit]")
    w.page.wait_for_url("**/w/default/clusters/local")
    cookie = next(c for c in context.cookies() if c["name"] == "corral_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert w.page.evaluate("document.cookie") == ""  # no script reads it
    rows = w.page.locator("table.nodes tbody tr")
    assert rows.count() == 4
    assert "idle" in rows.first.inner_text() or "running" in rows.first.inner_text()
    w.page.fill("input[name=nodes]", "100000")  # an error is said in the page
    w.page.click("form[data-api$='/resize'] button")
    w.page.click("#confirm-ok")
    w.page.wait_for_selector("#flash:not([hidden])")
    assert "nodes" in w.page.inner_text("#flash")
    w.expected_failure(413)
    w.expected_failure(422)
    w.page.fill("input[name=nodes]", "5")
    w.page.click("form[data-api$='/resize'] button")
    w.page.click("#confirm-ok")
    until(lambda: portal.client().get_cluster("local").target_nodes == 5)
    w.page.wait_for_selector("table.nodes tbody tr >> nth=4")  # the page reloads with the new node
    portal.client().resize_cluster("local", 4)
    w.page.click("text=Overview")
    assert w.page.locator("table.clusters tbody tr").first.inner_text().startswith("local")
    w.page.click("text=Sign out")
    w.page.wait_for_url("**/signin")
    w.page.goto(portal.url + "/w/default")
    assert "/signin" in w.page.url
    context.close()
    w.clean()


def test_a_running_jobs_log_lines_arrive_live_and_terminate_asks_first(
    page: Watched, portal: ServerHandle, tmp_path: Path
) -> None:
    c = portal.client()
    c.create_job({"cluster": "local", "custom": {"command": printer(tmp_path, 600, 0.1)}}, name="talker")
    p = page.page
    p.goto(portal.url + "/w/default/e/default/jobs/talker")
    p.wait_for_function("document.querySelector('#log').textContent.includes('line 5')", timeout=30_000)
    first = p.inner_text("#log").count("\n")
    p.wait_for_function(f"document.querySelector('#log').textContent.split('\\n').length > {first + 10}")
    assert "warning 3" in p.inner_text("#log")  # stderr too
    assert p.locator("#log .e").count() >= 1
    assert c.get_job("talker").state == "running"  # lines arrived while it ran, with no reload

    p.click("#terminate")
    assert p.locator("#confirm").is_visible()
    p.click("#confirm button[value=cancel]")
    assert c.get_job("talker").state == "running"  # cancelled: nothing sent
    p.click("#terminate")
    p.click("#confirm-ok")
    until(lambda: c.get_job("talker").state == "terminated", timeout=30)
    p.wait_for_function("document.querySelector('.status .state').textContent === 'terminated'", timeout=15_000)
    assert p.locator("#terminate").count() == 0
    p.click("#delete")
    assert "cannot be undone" in p.inner_text("#confirm-text")
    p.click("#confirm-ok")
    p.wait_for_url("**/w/default/jobs")
    assert "talker" not in [j.name for j in c.list_jobs()]


def test_ten_thousand_jobs_page_by_page_with_filters(page: Watched, portal: ServerHandle) -> None:
    c = portal.client()
    c.create_experiment("many")
    c.create_job({"cluster": "local", "custom": {"command": "true"}}, name="template", experiment="many")
    c.wait_job("template", experiment="many", timeout=60)
    seed_jobs(portal.database_url, "template", 10_000)
    p = page.page
    p.goto(portal.url + "/w/default/jobs?experiment=many")
    rows = p.locator("#job-rows tr")
    assert rows.count() == 50
    assert rows.first.get_attribute("data-job") == "bulk-09999"  # newest first
    seen = [rows.nth(i).get_attribute("data-job") for i in range(50)]
    for _ in range(3):
        p.click("text=Older →")
        p.wait_for_load_state()
        names = [rows.nth(i).get_attribute("data-job") for i in range(rows.count())]
        assert len(names) == 50 and not set(names) & set(seen)
        assert names == sorted(names, reverse=True) and names[0] < seen[-1]
        seen += names
    p.click("text=← Newer")
    assert rows.first.get_attribute("data-job") == "bulk-09899"  # the page before the last one shown
    p.fill("input[name=text]", "bulk-0420")
    p.click("form.filters button")
    assert [rows.nth(i).get_attribute("data-job") for i in range(rows.count())] == [
        f"bulk-0420{i}" for i in range(9, -1, -1)
    ]
    p.select_option("select[name=state]", "failed")
    p.click("form.filters button")
    assert "No jobs match" in p.inner_text("#job-rows")


def test_a_jobs_metrics_are_charted_and_jobs_overlaid(page: Watched, portal: ServerHandle, tmp_path: Path) -> None:
    script = tmp_path / "report.py"
    script.write_text(
        "from corral.runtime import flush, report\n"
        "import sys\n"
        "scale = float(sys.argv[1])\n"
        "for step in range(300):\n"
        "    report(step=step, loss=scale / (1 + step), accuracy=step / 300)\n"
        "flush()\n"
    )
    c = portal.client()
    for name, scale in (("curve-a", 1.0), ("curve-b", 2.0)):
        c.create_job({"cluster": "local", "custom": {"command": f"{sys.executable} {script} {scale}"}}, name=name)
    for name in ("curve-a", "curve-b"):
        assert c.wait_job(name, timeout=60).state == "succeeded"
    until(lambda: len(c.job_metrics("curve-a")) == 2 and len(c.job_metrics("curve-b")) == 2)
    p = page.page
    p.goto(portal.url + "/w/default/e/default/jobs/curve-a")
    assert "loss" in p.inner_text("table.series")
    p.click("text=Charts")
    p.wait_for_selector("figure[data-drawn-ms]")
    figures = p.locator("figure[data-chart]")
    assert figures.count() == 2 and "300 points" in p.inner_text("figure >> nth=0")
    p.fill("#add-job", "default/curve-b")
    p.click("text=Overlay")
    p.wait_for_function("document.querySelectorAll('figure[data-drawn-ms]').length === 2")
    legend = p.inner_text("figure >> nth=0")
    assert "default/curve-a" in legend and "default/curve-b" in legend
    assert p.locator("figure >> nth=0 >> canvas").count() == 1


def test_a_sweeps_trials_objective_and_parallel_coordinates(
    page: Watched, portal: ServerHandle, tmp_path: Path
) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        "import sys\nfrom corral.runtime import flush, report\n"
        "x, kind = float(sys.argv[1]), sys.argv[2]\n"
        "for step in range(3):\n"
        "    report(step=step, loss=(x - 2) ** 2 + (0.5 if kind == 'b' else 0) + 1 / (1 + step))\n"
        "flush()\n"
    )
    spec = {
        "name": "tune",
        "trial": {"cluster": "local", "custom": {"command": f"{sys.executable} {trainer} ${{x}} ${{kind}}"}},
        "parameters": {"x": {"type": "float", "low": 0, "high": 4, "step": 1},
                       "kind": {"type": "choice", "values": ["a", "b"]}},
        "objective": {"metric": "loss", "mode": "min"},
        "sampler": {"type": "grid"},
        "pruner": {"type": "none"},
        "max_trials": 10,
        "parallelism": 4,
    }  # fmt: skip
    c = portal.client()
    c.create_sweep(spec)
    until(lambda: c.get_sweep("tune").state != "running", timeout=180)
    p = page.page
    p.click("text=Sweeps")
    p.click("text=tune")
    rows = p.locator("table.trials tbody tr")
    assert rows.count() == 10
    assert "x=2" in rows.first.inner_text() and "kind=a" in rows.first.inner_text()  # the best first
    p.wait_for_selector("#parallel[data-lines='10']")
    assert p.locator("#objective-chart canvas").count() == 1
    data = json.loads(p.inner_text("#sweep-data"))
    assert sorted(t["number"] for t in data["trials"]) == list(range(10))


def test_a_reader_sees_the_job_but_cannot_terminate_it(browser: Any, portal: ServerHandle, tmp_path: Path) -> None:
    admin = portal.client()
    rita = admin.create_user("rita-reader")
    admin.set_member("rita-reader", "reader", workspace="default")
    admin.create_job({"cluster": "local", "custom": {"command": printer(tmp_path, 300, 0.1)}}, name="guarded")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    w = watch(context, portal.url)
    sign_in(w.page, portal.url, rita.token, "/w/default/e/default/jobs/guarded")
    w.page.wait_for_function("document.querySelector('#log').textContent.includes('line 2')", timeout=30_000)
    assert w.page.locator("#terminate").count() == 0 and w.page.locator("#delete").count() == 0
    # Even asked by hand, with the page's CSRF token, the API refuses
    status = w.page.evaluate(
        """async () => (await fetch('/api/v1/workspaces/default/experiments/default/jobs/guarded/terminate', {
             method: 'POST',
             headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}})).status"""
    )
    assert status == 403
    w.expected_failure(403)
    assert admin.get_job("guarded").state == "running"
    admin.terminate_job("guarded")
    context.close()
    w.clean()


def test_another_site_cannot_act_with_the_cookie(portal: ServerHandle) -> None:
    with httpx.Client(base_url=portal.url, cookies={"corral_session": portal.token}) as http:
        assert http.get("/api/v1/workspaces/default/clusters").status_code == 200  # reading: the cookie is enough
        refused = http.post("/api/v1/workspaces/default/experiments", json={"name": "csrf"})
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]["message"]
        page = http.get("/w/default").text
        csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        made = http.post(
            "/api/v1/workspaces/default/experiments", json={"name": "csrf"}, headers={"X-CSRF-Token": csrf}
        )
        assert made.status_code == 201
        elsewhere = http.post("/signin", data={"token": portal.token}, headers={"Origin": "http://evil.example"})
        assert elsewhere.status_code == 403
        assert http.post("/signout", data={"csrf": "wrong"}).status_code == 403


def test_errors_are_pages_and_a_phone_gets_no_sideways_scroll(browser: Any, portal: ServerHandle) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    w = watch(context, portal.url)
    sign_in(w.page, portal.url, portal.token)
    for path in ("/w/default", "/w/default/jobs", "/w/default/clusters/local", "/w/default/usage"):
        w.page.goto(portal.url + path)
        assert w.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    answer = w.page.goto(portal.url + "/w/default/e/default/jobs/no-such-job")
    assert answer is not None and answer.status == 404
    assert "Not found" in w.page.inner_text("h1") and "no-such-job" in w.page.inner_text(".message")
    assert "Traceback" not in w.page.content()
    answer = w.page.goto(portal.url + "/no/such/page")
    assert answer is not None and answer.status == 404 and "Not found" in w.page.inner_text("h1")
    w.expected_failure(404)
    context.close()
    w.clean()
