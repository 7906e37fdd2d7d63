"""Security, first slice (issue 12), through a real server: the home and what holds secrets are the server's
user's alone, strangers learn nothing from health or the schema, and a deleted user or a replaced token is
refused on the very next request."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from corral.client.client import Client
from corral.core.errors import Conflict, Forbidden, Unauthorized
from tests.conftest import ServerHandle, until

CORRAL = str(Path(sys.executable).parent / "corral")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_home_and_what_holds_secrets_are_private(server_factory: object, tmp_path: Path) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    assert mode(srv.home) == 0o700
    for name in ("corral.db", "token", "server.log", "server.pid"):
        assert mode(srv.home / name) == 0o600, name
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    code = tmp_path / "code"
    code.mkdir()
    (code / "run.sh").write_text("echo result > $CORRAL_OUTPUT_OUT/result.txt\n")
    job = c.create_job({"cluster": "one", "code": str(code), "custom": {"command": "sh run.sh"},
                        "outputs": [{"id": "OUT", "path": str(tmp_path / "out")}]})  # fmt: skip
    assert c.wait_job(job.name, timeout=60).state == "succeeded"
    archives = list((srv.home / "code").rglob("*.tar.gz"))
    assert archives and all(mode(a) == 0o600 for a in archives)
    assert mode(Path(job.job_dir) / "stdouterr") == 0o700
    result = next((tmp_path / "out").rglob("result.txt"))
    assert mode(result) == 0o644  # what a job writes is as readable as from a shell (umask 022)


def test_an_older_home_is_closed_at_start(server_factory: object, tmp_path: Path) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    srv.stop()
    srv.home.chmod(0o755)
    (srv.home / "corral.db").chmod(0o644)
    srv.start()
    assert mode(srv.home) == 0o700 and mode(srv.home / "corral.db") == 0o600


def test_strangers_learn_nothing_from_health_or_the_schema(server: ServerHandle) -> None:
    health = httpx.get(f"{server.url}/api/v1/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    known = httpx.get(f"{server.url}/api/v1/health", headers={"Authorization": f"Bearer {server.token}"}).json()
    assert known["pid"] > 0 and known["loop"]["status"] == "ok"
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(f"{server.url}/api/v1{path}").status_code == 401
        assert httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{server.url}/api/v1{path}", headers={"Authorization": f"Bearer {server.token}"}).is_success


def test_public_docs_is_a_setting(server_factory: object) -> None:
    srv: ServerHandle = server_factory(settings={"CORRAL_PUBLIC_DOCS": "true"})  # type: ignore[operator]
    assert "/api/v1/health" in httpx.get(f"{srv.url}/api/v1/openapi.json").json()["paths"]


def test_a_deleted_user_or_a_replaced_token_is_refused_at_once(server: ServerHandle) -> None:
    admin = server.client()
    name = f"bob{uuid.uuid4().hex[:6]}"
    bob_token = admin.create_user(name).token
    with Client(server=server.url, token=bob_token) as bob:
        assert bob.whoami().name == name  # cached now
        with pytest.raises(Forbidden):
            bob.new_token("admin")  # only an admin gives others tokens
        renewed = bob.new_token(name).token  # one's own, yes
        with pytest.raises(Unauthorized):
            bob.whoami()  # the old token: refused on the very next request
    with Client(server=server.url, token=renewed) as bob:
        assert bob.whoami().name == name
        admin.delete_user(name)
        with pytest.raises(Unauthorized):
            bob.whoami()
    with pytest.raises(Conflict, match="cannot delete yourself"):
        admin.delete_user("admin")
    assert name not in {u.name for u in admin.list_users()}


def test_the_admin_token_file_follows_a_new_admin_token(server_factory: object) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    old = srv.token
    env = {**srv.env, "CORRAL_CONFIG": os.devnull + "/none"}
    env.pop("CORRAL_TOKEN", None)
    made = subprocess.run([CORRAL, "user", "token"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and made.stdout.strip() == srv.token != old  # the local CLI goes on working
    assert subprocess.run([CORRAL, "whoami"], env=env, capture_output=True, timeout=60).returncode == 0
    assert httpx.get(f"{srv.url}/api/v1/users/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    gone = subprocess.run([CORRAL, "user", "delete", "admin"], env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "add --yes" in gone.stderr  # asks first; without a terminal it refuses


def test_secrets_are_sealed_in_the_database(server_factory: object, tmp_path: Path) -> None:
    """The job gets its secret; the database (file, WAL and all) holds no trace of it; a secret an older version
    stored in plain text is sealed at the next start."""
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    check = 'test "$(printf %s "$API_KEY" | sha256sum | cut -c1-64)" = "$DIGEST" && echo key=$API_KEY'
    job = c.create_job({"cluster": "one", "custom": {"command": check}, "env": {"DIGEST": digest},
                        "secrets": {"API_KEY": secret}})  # fmt: skip
    assert c.wait_job(job.name, timeout=60).state == "succeeded"  # the job got the very value
    assert c.job_logs(job.name) == "key=***\n"
    assert mode(srv.home / "secrets.key") == 0o600
    stored = b"".join(p.read_bytes() for p in srv.home.glob("corral.db*"))
    assert stored and secret.encode() not in stored  # the file, its WAL and all
    with sqlite3.connect(srv.home / "corral.db") as db:
        (raw,) = db.execute("SELECT secrets FROM jobs WHERE name = ?", (job.name,)).fetchone()
        assert secret not in raw and json.loads(raw)["API_KEY"].startswith("fernet:")
        # What an older version left: the value in plain text.
        db.execute("UPDATE jobs SET secrets = ? WHERE name = ?", (json.dumps({"API_KEY": secret}), job.name))
    srv.stop()
    srv.start()
    with sqlite3.connect(srv.home / "corral.db") as db:
        (raw,) = db.execute("SELECT secrets FROM jobs WHERE name = ?", (job.name,)).fetchone()
    assert secret not in raw and "fernet:" in raw
    assert c.job_logs(job.name) == "key=***\n"  # still masked: the server reads the sealed value back


def test_every_change_is_in_the_audit_trail(server: ServerHandle) -> None:
    """Who asked to change what, when, from where — allowed or refused; reads are not recorded; only admins
    read the trail."""
    admin = server.client()
    name = f"eve{uuid.uuid4().hex[:6]}"
    token = admin.create_user(name).token
    with Client(server=server.url, token=token) as eve:
        with pytest.raises(Forbidden):
            eve.create_user("mallory")
        assert eve.list_workspaces() == []  # a read (not recorded); she holds no role anywhere yet
        with pytest.raises(Forbidden):
            eve.audit()
    httpx.delete(f"{server.url}/api/v1/users/admin")  # no token at all: recorded as '-'

    def trail() -> list[tuple[str, str, str, int]]:
        return [(e.user, e.method, e.path, e.status) for e in admin.audit(limit=20)]

    until(lambda: ("-", "DELETE", "/api/v1/users/admin", 401) in trail(), timeout=10)
    entries = trail()
    assert ("admin", "POST", "/api/v1/users", 201) in entries
    assert (name, "POST", "/api/v1/users", 403) in entries
    assert not any(e[1] == "GET" for e in entries)
    mine = admin.audit(user=name)
    assert [e.status for e in mine] == [403] and mine[0].client == "127.0.0.1"
    cli = subprocess.run([CORRAL, "audit", "-u", name, "-o", "json"], env={**server.env, "CORRAL_TOKEN": server.token},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert cli.returncode == 0 and json.loads(cli.stdout)[0]["path"] == "/api/v1/users"


def test_a_contributor_cannot_make_workspaces_or_manage_clusters(server: ServerHandle) -> None:
    """Workspaces are the admins' to make, clusters (their nodes, exec included) their owners' to manage: a
    contributor cannot escape a quota with a workspace and cluster of their own, nor exec on a node; the job
    they submit gets none of the server's settings."""
    admin = server.client()
    name = f"dan{uuid.uuid4().hex[:6]}"
    token = admin.create_user(name).token
    admin.set_member(name, "contributor", workspace="default")
    with Client(server=server.url, token=token) as dan:
        with pytest.raises(Forbidden, match="only admins create workspaces"):
            dan.create_workspace("mine")
        for attempt in (
            lambda: dan.create_cluster({"name": "mine", "scale": {"nodes": 1}}),
            lambda: dan.resize_cluster("local", 8),
            lambda: dan.delete_cluster("local"),
            lambda: list(dan.node_exec("local", "node-0", ["cat", str(server.home / "token")])),
        ):
            with pytest.raises(Forbidden, match="is a contributor of workspace 'default'; this needs owner"):
                attempt()
        job = dan.create_job({"cluster": "local", "custom": {"command": "env"}})  # submitting is a contributor's
        assert dan.wait_job(job.name, timeout=60).state == "succeeded"
        seen = dan.job_logs(job.name)
    assert "CORRAL_JOB_NAME=" in seen  # the job's own variables, set by Corral
    for private in ("CORRAL_HOME=", "CORRAL_DATABASE_URL=", str(server.home / "token")):
        assert private not in seen  # not the server's settings
