"""Who may call what (issue 12), through a real server on SQLite and PostgreSQL: every route of the API called
as every role, answered as ``corral.server.access.RULES`` says; and the attacks a hostile but honest user tried,
each refused."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from corral.client.client import Client
from corral.core.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from corral.server.access import RULES
from tests.conftest import ServerHandle, passable, until

CORRAL = str(Path(sys.executable).parent / "corral")
ROLES = ("reader", "contributor", "owner")
#: What stands for a name in a path: nothing of that name exists, so an allowed call changes nothing.
PLACEHOLDER = "nothing-here"


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _allowed(response: httpx.Response, workspace: str) -> bool:
    """Whether the server let the call through to its route: refused is 401, 403, or the 404 a workspace
    where one holds no role gives (word for word that of a workspace that does not exist)."""
    if response.status_code in (401, 403):
        return False
    if response.status_code == 404:
        return response.json()["error"]["message"] != f"workspace {workspace!r} not found"
    return True


def _expected(rule: str, caller: str, *, own_name: bool) -> bool:
    if rule == "public":
        return True
    if caller == "anonymous":
        return False
    if caller == "admin":
        return True
    if rule == "user":
        return True
    if rule == "self":
        return own_name
    if rule in ("admin", "creator"):
        return False
    return caller in ROLES and ROLES.index(caller) >= ROLES.index(rule)


def _url(server: ServerHandle, path: str, workspace: str, name: str = PLACEHOLDER) -> str:
    filled = path.replace("{ws}", workspace).replace("{sha256}", "0" * 64)
    for param in ("{exp}", "{node}", "{user}", "{metric}"):
        filled = filled.replace(param, PLACEHOLDER)
    return f"{server.url}/api/v1{filled.replace('{name}', name)}"


def test_every_route_as_every_role(server: ServerHandle) -> None:
    admin = server.client()
    schema = httpx.get(f"{server.url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {server.token}"})
    routes = {(method.upper(), path.removeprefix("/api/v1")) for path, ops in schema.json()["paths"].items()
              for method in ops}  # fmt: skip
    assert routes == set(RULES)  # generated from the app's routes: a route without a rule fails here
    workspace = f"acl-{_tag()}"
    admin.create_workspace(workspace)
    tokens: dict[str, str | None] = {"anonymous": None, "admin": server.token}
    names: dict[str, str] = {"admin": "admin"}
    for caller in ("outsider", *ROLES):
        names[caller] = f"{caller}-{_tag()}"
        tokens[caller] = admin.create_user(names[caller]).token
        if caller != "outsider":
            admin.set_member(names[caller], caller, workspace=workspace)

    wrong: list[str] = []
    for caller, token in tokens.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(headers=headers, timeout=30) as http:
            for (method, path), rule in sorted(RULES.items()):
                response = http.request(method, _url(server, path, workspace), json={})
                if _allowed(response, workspace) != _expected(rule, caller, own_name=False):
                    wrong.append(f"{caller} {method} {path}: {response.status_code} {response.text[:120]}")
    # 'self': each user may renew and revoke their own token (last: it ends the token).
    for caller in ("outsider", *ROLES):
        for method in ("POST", "DELETE"):
            headers = {"Authorization": f"Bearer {tokens[caller]}"}
            response = httpx.request(method, _url(server, "/users/{name}/token", workspace, names[caller]),
                                     headers=headers)  # fmt: skip
            if not _allowed(response, workspace):
                wrong.append(f"{caller} {method} own token: {response.status_code} {response.text[:120]}")
            if method == "POST" and response.is_success:
                tokens[caller] = response.json()["token"]
    assert not wrong, "\n".join(wrong)


def test_bob_sees_nothing_of_a_workspace_where_he_holds_no_role(server: ServerHandle, tmp_path: Path) -> None:
    """The admin's job in a workspace bob is not in: for bob it does not exist, whatever he asks."""
    admin = server.client()
    workspace = f"private-{_tag()}"
    admin.create_workspace(workspace)
    admin.create_cluster({"name": "one", "scale": {"nodes": 1}}, workspace=workspace)
    code = tmp_path / "code"
    code.mkdir()
    (code / "run.sh").write_text("echo hidden > $CORRAL_OUTPUT_OUT/secret.txt; echo the-log\n")
    out = tmp_path / "out"
    job = admin.create_job({"cluster": "one", "code": str(code), "custom": {"command": "sh run.sh"},
                            "outputs": [{"id": "OUT", "path": str(out)}]}, workspace=workspace)  # fmt: skip
    assert admin.wait_job(job.name, workspace=workspace, timeout=60).state == "succeeded"
    bob_name = f"bob-{_tag()}"
    bob_token = admin.create_user(bob_name).token
    admin.set_member(bob_name, "owner", workspace="default")  # an owner elsewhere: no right here
    with Client(server=server.url, token=bob_token, workspace=workspace) as bob:
        assert workspace not in {w.name for w in bob.list_workspaces()}
        assert {w.name: w.role for w in bob.list_workspaces()} == {"default": "owner"}
        for attempt in (
            lambda: bob.list_jobs(),
            lambda: bob.get_job(job.name),
            lambda: bob.job_logs(job.name),
            lambda: list(bob.list_files(job.name, output="OUT")),
            lambda: bob.download_file(job.name, output="OUT", path="secret.txt", destination=tmp_path / "stolen"),
            lambda: bob.terminate_job(job.name),
            lambda: bob.delete_job(job.name),
            lambda: bob.delete_experiment("default"),
            lambda: bob.list_clusters(),
            lambda: list(bob.node_exec("one", "node-0", ["id"])),
            lambda: bob.set_member(bob_name, "owner"),
        ):
            with pytest.raises(NotFound, match=f"^workspace '{workspace}' not found$"):
                attempt()
    assert not (tmp_path / "stolen").exists()
    assert admin.get_job(job.name, workspace=workspace).state == "succeeded"  # untouched


def test_contributors_change_their_own_jobs_owners_every_job(server: ServerHandle) -> None:
    admin = server.client()
    workspace = f"team-{_tag()}"
    admin.create_workspace(workspace)
    admin.create_cluster({"name": "one", "scale": {"nodes": 1}}, workspace=workspace)
    people: dict[str, Client] = {}
    for role in ("reader", "contributor", "owner"):
        name = f"{role}-{_tag()}"
        people[role] = Client(server=server.url, token=admin.create_user(name).token, workspace=workspace)
        admin.set_member(name, role, workspace=workspace)
    alice = people["contributor"]
    bob_name = f"bob-{_tag()}"
    bob = Client(server=server.url, token=admin.create_user(bob_name).token, workspace=workspace)
    admin.set_member(bob_name, "contributor", workspace=workspace)
    try:
        long = {"cluster": "one", "custom": {"command": "sleep 60"}}
        mine = alice.create_job(long)
        assert bob.get_job(mine.name).name == mine.name  # members see each other's jobs
        with pytest.raises(Forbidden, match=f"is {alice.whoami().name!r}'s"):
            bob.terminate_job(mine.name)
        with pytest.raises(Forbidden, match="this needs contributor"):
            people["reader"].terminate_job(mine.name)
        with pytest.raises(Forbidden, match="this needs owner"):
            bob.delete_experiment("default")  # which would delete every member's jobs
        assert alice.terminate_job(mine.name).name == mine.name  # her own: yes
        assert alice.wait_job(mine.name, timeout=60).state == "terminated"
        with pytest.raises(Forbidden):
            bob.delete_job(mine.name)
        other = bob.create_job(long)
        people["owner"].terminate_job(other.name)  # an owner: every member's job
        assert people["owner"].wait_job(other.name, timeout=60).state == "terminated"
        people["owner"].delete_job(other.name)
        alice.delete_job(mine.name)
        # An owner manages the members; a member who is removed loses the workspace on the next request.
        people["owner"].remove_member(bob_name)
        with pytest.raises(NotFound, match=f"^workspace '{workspace}' not found$"):
            bob.list_jobs()
        assert {m.user for m in people["owner"].list_members()} == {c.whoami().name for c in people.values()}
    finally:
        for c in (*people.values(), bob):
            c.close()


def test_revoked_and_expired_tokens_are_refused_and_roles_go_with_the_user(server: ServerHandle) -> None:
    admin = server.client()
    name = f"carol-{_tag()}"
    token = admin.create_user(name, expires_in=2).token
    admin.set_member(name, "contributor", workspace="default")
    with Client(server=server.url, token=token) as carol:
        assert carol.whoami().token_expires_at is not None
        time.sleep(2.1)
        with pytest.raises(Unauthorized, match="has expired"):
            carol.whoami()
    token = admin.new_token(name).token
    with Client(server=server.url, token=token) as carol:
        assert carol.whoami().name == name
        admin.revoke_token(name)
        with pytest.raises(Unauthorized):
            carol.whoami()
    admin.delete_user(name)
    admin.create_user(name)  # the same name again: none of the old user's roles
    assert name not in {m.user for m in admin.list_members(workspace="default")}


def test_users_may_create_workspaces_where_the_server_says_so(server_factory: object) -> None:
    srv: ServerHandle = server_factory(settings={"CORRAL_USERS_CREATE_WORKSPACES": "true"})  # type: ignore[operator]
    admin = srv.client()
    name = f"erin-{_tag()}"
    with Client(server=srv.url, token=admin.create_user(name).token) as erin:
        made = erin.create_workspace("erins")
        assert made.role == "owner"
        with pytest.raises(Forbidden, match="only admins name another user"):
            erin.create_workspace("for-admin", owner="admin")
        erin.create_cluster({"name": "mine", "scale": {"nodes": 1}}, workspace="erins")  # an owner's right
        assert [w.name for w in erin.list_workspaces()] == ["erins"]


def test_members_through_the_cli(server: ServerHandle) -> None:
    admin = server.client()
    workspace = f"cli-{_tag()}"
    user = f"frank-{_tag()}"
    env = {**server.env, "CORRAL_TOKEN": server.token}
    admin.create_user(user)

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True, timeout=60)

    assert corral("workspace", "create", workspace, "--owner", user).returncode == 0
    added = corral("workspace", "member", "add", workspace, "admin", "--role", "reader")
    assert added.returncode == 0 and "admin is a reader" in added.stdout
    listed = json.loads(corral("workspace", "member", "list", workspace, "-o", "json").stdout)
    assert {(m["user"], m["role"]) for m in listed} == {(user, "owner"), ("admin", "reader")}
    assert corral("workspace", "member", "remove", workspace, "admin").returncode == 0
    bad = corral("workspace", "member", "add", workspace, user, "--role", "king")
    assert bad.returncode != 0 and "king" in bad.stderr
    token = corral("token", "new", user, "--expires", "1h").stdout.strip()
    assert httpx.get(f"{server.url}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).is_success
    revoked = corral("token", "revoke", user)
    assert revoked.returncode == 0 and f"revoked the token of {user}" in revoked.stdout
    assert httpx.get(f"{server.url}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_jobs_setups_and_node_commands_run_as_their_user(server: ServerHandle) -> None:
    """The server runs as root: bob's job, his cluster's setup and his node commands run as his own Unix
    account, which can read neither the server's token nor its database, nor another job's environment."""
    assert os.geteuid() == 0, "the tests run as root, as scripts/ do"
    admin = server.client()
    workspace = f"iso-{_tag()}"
    admin.create_workspace(workspace)
    secret = f"hush-{uuid.uuid4().hex}"
    held = admin.create_job({"cluster": "local", "custom": {"command": "sleep 30"}, "secrets": {"HUSH": secret}})
    bob_name = f"bob-{_tag()}"
    made = admin.create_user(bob_name)
    assert made.unix_user == f"corral-{bob_name}"
    bob_uid = pwd.getpwnam(made.unix_user).pw_uid
    admin.set_member(bob_name, "owner", workspace=workspace)
    home = server.home
    with Client(server=server.url, token=made.token, workspace=workspace) as bob:
        bob.create_cluster({"name": "mine", "scale": {"nodes": 1}, "setup": {"command": "id -u"}})
        try_all = (
            f"id -u; cat {home}/token || echo no-token; head -c 16 {home}/corral.db || echo no-db; "
            f"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {secret} || true"
        )
        job = bob.create_job({"cluster": "mine", "custom": {"command": try_all}})
        assert bob.wait_job(job.name, timeout=60).state == "succeeded"
        out, err = bob.job_logs(job.name).split(), bob.job_logs(job.name, stream="stderr")
        assert out == [str(bob_uid), "no-token", "no-db", "0"], (out, err)
        assert "Permission denied" in err
        assert Path(job.job_dir, "stdouterr", "attempt-1", "stdout-0.txt").stat().st_uid == bob_uid
        assert bob.node_logs("mine", "node-0").split() == [str(bob_uid)]  # the setup ran as bob
        ran = dict(bob.node_exec("mine", "node-0", ["sh", "-c", f"id -u; cat {home}/token"]))
        assert ran.get("stdout") == str(bob_uid) and ran.get("exit") != "0"
    admin.terminate_job(held.name)
    mine = admin.create_job({"cluster": "local", "custom": {"command": "id -u"}})
    assert admin.wait_job(mine.name, timeout=60).state == "succeeded" and admin.job_logs(mine.name) == "0\n"


def test_an_admin_names_an_existing_account(server: ServerHandle) -> None:
    admin = server.client()
    name = f"nob-{_tag()}"
    made = admin.create_user(name, unix_user="nobody")
    assert made.unix_user == "nobody"
    with pytest.raises(InvalidRequest, match="no Unix account 'no-such-account'"):
        admin.create_user(f"x-{_tag()}", unix_user="no-such-account")
    admin.set_member(name, "contributor", workspace="default")
    with Client(server=server.url, token=made.token) as user:
        job = user.create_job({"cluster": "local", "custom": {"command": "id -un"}})
        assert user.wait_job(job.name, timeout=60).state == "succeeded" and user.job_logs(job.name) == "nobody\n"


def test_one_user_mode_says_so_and_its_users_get_accounts_later(server_factory: object) -> None:
    srv: ServerHandle = server_factory(settings={"CORRAL_RUN_AS_USERS": "false"})  # type: ignore[operator]
    admin = srv.client()
    name = f"gil-{_tag()}"
    assert admin.create_user(name).unix_user is None
    with pytest.raises(InvalidRequest, match="runs every job as its own user"):
        admin.create_user(f"hal-{_tag()}", unix_user="nobody")
    srv.stop()
    srv.start()
    assert "one-user mode" in (srv.home / "server.log").read_text()
    srv.stop()  # the same home, now isolating users (the server runs as root): gil gets an account
    srv.settings.pop("CORRAL_RUN_AS_USERS")
    srv.start()
    users = {u.name: u.unix_user for u in srv.client().list_users()}
    assert users[name] == f"corral-{name}" and users["admin"] is None


def test_code_serves_only_the_workspaces_it_was_sent_to(server: ServerHandle, tmp_path: Path) -> None:
    """Knowing the SHA-256 of another workspace's code is not enough to run it: sending its bytes is."""
    admin = server.client()
    code = tmp_path / "code"
    code.mkdir()
    (code / "model.py").write_text(f"SECRET_WEIGHTS = {uuid.uuid4().hex!r}\n")
    sha = admin.upload_code(code, workspace="default")
    workspace = f"code-{_tag()}"
    admin.create_workspace(workspace)
    admin.create_cluster({"name": "one", "scale": {"nodes": 1}}, workspace=workspace)
    name = f"ivy-{_tag()}"
    token = admin.create_user(name).token
    admin.set_member(name, "contributor", workspace=workspace)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{server.url}/api/v1/workspaces/{workspace}"
    assert httpx.get(f"{base}/code/{sha}", headers=headers).status_code == 404
    spec = {"cluster": "one", "custom": {"command": "cat model.py"}}
    refused = httpx.post(f"{base}/experiments/default/jobs", headers=headers, json={"spec": spec, "code_archive": sha})
    assert refused.status_code == 404 and "not uploaded to workspace" in refused.json()["error"]["message"]
    with Client(server=server.url, token=token, workspace=workspace) as ivy:  # sending the bytes: yes
        job = ivy.create_job({**spec, "code": str(code)})
        assert ivy.wait_job(job.name, timeout=60).state == "succeeded"
        assert "SECRET_WEIGHTS" in ivy.job_logs(job.name)


def test_an_output_where_the_account_may_not_write_fails_the_job(server: ServerHandle, tmp_path: Path) -> None:
    admin = server.client()
    name = f"jo-{_tag()}"
    token = admin.create_user(name).token
    admin.set_member(name, "contributor", workspace="default")
    closed = passable(tmp_path) / "closed"
    closed.mkdir(mode=0o755)  # root's: others may not write it
    with Client(server=server.url, token=token) as jo:
        job = jo.create_job({"cluster": "local", "custom": {"command": "true"},
                             "outputs": [{"id": "OUT", "path": str(closed)}]})  # fmt: skip
        ended = jo.wait_job(job.name, timeout=60)
    assert ended.state == "failed" and f"may not write {closed}" in (ended.error.message if ended.error else "")
    assert list(closed.iterdir()) == []  # nothing was made there for the job


def test_a_job_resumed_after_a_server_crash_still_runs_as_its_user(server_factory: object) -> None:
    """SIGKILL during the prepare phase: the new server re-attaches, and the processes it starts after the
    prepare run as the job's account, not as root."""
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    admin = srv.client()
    admin.create_cluster({"name": "one", "scale": {"nodes": 1}})
    name = f"kim-{_tag()}"
    made = admin.create_user(name)
    admin.set_member(name, "contributor", workspace="default")
    with Client(server=srv.url, token=made.token) as kim:
        job = kim.create_job({"cluster": "one", "prepare": {"command": "echo preparing; sleep 3"},
                              "custom": {"command": "id -u"}})  # fmt: skip

        def preparing() -> bool:
            try:
                return "preparing" in kim.job_logs(job.name, stream="prepare")
            except NotFound:  # no log yet
                return False

        until(preparing)  # the prepare runs (a crash before it starts loses the attempt, as for anyone)
        srv.kill()
        srv.start()
        assert kim.wait_job(job.name, timeout=60).state == "succeeded"
        assert kim.job_logs(job.name) == f"{pwd.getpwnam(made.unix_user or '').pw_uid}\n"


def test_a_home_other_accounts_cannot_reach_fails_their_jobs_clearly(server_factory: object) -> None:
    """A home under a folder only root may pass (as /root is): the job fails at launch naming that folder."""
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    admin = srv.client()
    admin.create_cluster({"name": "one", "scale": {"nodes": 1}})
    name = f"lee-{_tag()}"
    token = admin.create_user(name).token
    admin.set_member(name, "contributor", workspace="default")
    closed = srv.home.parent
    closed.chmod(0o700)
    try:
        with Client(server=srv.url, token=token) as lee:
            job = lee.create_job({"cluster": "one", "custom": {"command": "true"}})
            ended = lee.wait_job(job.name, timeout=60)
    finally:
        closed.chmod(0o711)
    message = ended.error.message if ended.error else ""
    assert ended.state == "failed" and f"cannot pass {closed} (mode 700)" in message, message
