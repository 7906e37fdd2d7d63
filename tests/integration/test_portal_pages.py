"""The portal's pages over HTTP, on SQLite and PostgreSQL: signing in, what each page reads, paging and filters,
and a user seeing only their own workspaces (the browser's side is ``tests/e2e/test_portal.py``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.conftest import ServerHandle, until
from tests.portal import seed_jobs

ROW = re.compile(r'<tr data-job="([^"]+)">')


@contextmanager
def signed_in(server: ServerHandle, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, follow_redirects=False) as http:
        answer = http.post("/signin", data={"token": token, "back": "/w/default/jobs"})
        assert answer.status_code == 303 and answer.headers["location"] == "/w/default/jobs"
        yield http


def test_pages_need_a_sign_in_and_come_back_after_it(server: ServerHandle) -> None:
    with httpx.Client(base_url=server.url) as http:
        answer = http.get("/w/default/usage?x=1")
        assert answer.status_code == 303 and answer.headers["location"] == "/signin?back=%2Fw%2Fdefault%2Fusage%3Fx%3D1"
        assert "Sign in" in http.get("/signin").text
        assert "give a token" in http.post("/signin", data={"token": " "}).text
        wrong = http.post("/signin", data={"token": "nope"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert http.get("/api/v1/workspaces").status_code == 401  # no cookie from a refused sign-in
        away = http.post("/signin", data={"token": server.token, "back": "//elsewhere.example/"})
        assert away.headers["location"] == "/"  # never off this server
        assert http.get("/api/v1/workspaces").status_code == 200  # the cookie signs the API's requests in too


def test_every_page_reads_what_the_workspace_holds(server: ServerHandle) -> None:
    c = server.client()
    c.create_experiment("pages")
    c.create_job({"cluster": "local", "custom": {"command": "echo hello-portal"}}, name="first", experiment="pages")
    assert c.wait_job("first", experiment="pages", timeout=60).state == "succeeded"
    with signed_in(server, server.token) as http:
        overview = http.get("/w/default").text
        assert 'href="/w/default/clusters/local"' in overview and "first" in overview
        cluster = http.get("/w/default/clusters/local").text
        assert cluster.count("<tr>") >= 5 and "Resize" in cluster  # its nodes; an admin may resize
        job = http.get("/w/default/e/pages/jobs/first").text
        assert "succeeded" in job and "exit code 0" in job and 'id="delete"' in job and 'id="terminate"' not in job
        assert "hello-portal" in http.get("/api/v1/workspaces/default/experiments/pages/jobs/first/logs").text
        head = http.get("/w/default/e/pages/jobs/first?part=head").text
        assert head.startswith("\n<section") or head.lstrip().startswith("<section")
        usage = http.get("/w/default/usage").text
        assert "admin" in usage and "pages" in usage
        assert http.get("/w/default/sweeps").status_code == 200
        assert "No job pages/missing" in http.get("/w/default/metrics?job=pages/missing").text
        missing = http.get("/w/default/e/pages/jobs/missing")
        assert missing.status_code == 404 and "missing" in missing.text and "<html" in missing.text
        assert http.get("/api/v1/nope").json()["error"]["code"] == "NotFound"  # the API still answers in JSON


def test_the_jobs_list_pages_by_keyset_and_filters(server: ServerHandle) -> None:
    c = server.client()
    c.create_experiment("paging")
    c.create_job({"cluster": "local", "custom": {"command": "true"}}, name="model", experiment="paging")
    c.wait_job("model", experiment="paging", timeout=60)
    seed_jobs(server.database_url, "model", 120, prefix="page-")
    with signed_in(server, server.token) as http:
        first = http.get("/w/default/jobs", params={"experiment": "paging"}).text
        names = ROW.findall(first)
        assert names[:2] == ["page-00119", "page-00118"] and len(names) == 50
        seen = list(names)
        page = first
        while "Older →" in page:
            older = re.search(r'href="([^"]+)" rel="next"', page)
            assert older is not None
            page = http.get(older.group(1).replace("&amp;", "&")).text
            seen += ROW.findall(page)
        assert seen == [f"page-{i:05d}" for i in range(119, -1, -1)] + ["model"]
        newer = re.search(r'href="([^"]+)" rel="prev"', page)
        assert newer is not None
        back = ROW.findall(http.get(newer.group(1).replace("&amp;", "&")).text)
        assert back == seen[50:100]
        assert ROW.findall(http.get("/w/default/jobs", params={"text": "page-0011", "experiment": "paging"}).text) == [
            f"page-0011{i}" for i in range(9, -1, -1)
        ]
        assert ROW.findall(http.get("/w/default/jobs", params={"state": "failed", "experiment": "paging"}).text) == []
        assert len(ROW.findall(http.get("/w/default/jobs", params={"user": "admin", "cluster": "local"}).text)) == 50
        rows = http.get("/w/default/jobs", params={"experiment": "paging", "part": "rows"}).text
        assert rows.lstrip().startswith("<tbody") and "<html" not in rows
        assert http.get("/w/default/jobs", params={"before": "x"}).status_code == 422


def test_a_user_sees_only_their_workspaces_and_changes_nothing_with_a_forged_request(server: ServerHandle) -> None:
    admin = server.client()
    stranger = admin.create_user("stranger-portal")
    with signed_in(server, stranger.token) as http:
        assert http.get("/w/default").status_code == 404  # as the API says: no such workspace for them
        assert "no workspace" in http.get("/").text
        admin.set_member("stranger-portal", "reader", workspace="default")
        assert http.get("/w/default").status_code == 200
        forged = http.post("/api/v1/workspaces/default/experiments", json={"name": "forged"})
        assert forged.status_code == 403
        admin.revoke_token("stranger-portal")
        until(lambda: http.get("/w/default").status_code == 303)  # a revoked token signs its cookie out
