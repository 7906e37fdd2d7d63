"""The REST API of a real server over HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from corral.core.errors import AlreadyExists, Conflict, InvalidRequest, InvalidSpec, NotFound
from tests.conftest import ServerHandle, until

CORRAL = str(Path(sys.executable).parent / "corral")


def api(server: ServerHandle, method: str, path: str, token: str | None = None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token if token is not None else server.token}"}
    return httpx.request(method, f"{server.url}/api/v1{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_health_needs_no_token_but_everything_else_does(server: ServerHandle) -> None:
    assert httpx.get(f"{server.url}/api/v1/health").json() == {"status": "ok"}  # no version or pid to strangers
    assert httpx.get(f"{server.url}/api/v1/workspaces").status_code == 401
    bad = api(server, "GET", "/workspaces", token="not-a-token")
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "Unauthorized"
    assert api(server, "GET", "/workspaces").status_code == 200


def test_token_file_is_private(server: ServerHandle) -> None:
    assert (server.home / "token").stat().st_mode & 0o777 == 0o600


def test_openapi_lists_the_resources(server: ServerHandle) -> None:
    paths = api(server, "GET", "/openapi.json").json()["paths"]
    for path in (
        "/api/v1/workspaces/{ws}/clusters/{name}/nodes",
        "/api/v1/workspaces/{ws}/experiments/{exp}/jobs/{name}/terminate",
        "/api/v1/workspaces/{ws}/experiments/{exp}/jobs/{name}/logs",
        "/api/v1/workspaces/{ws}/experiments/{exp}/jobs/{name}/files/content",
        "/api/v1/workspaces/{ws}/experiments/{exp}/jobs/{name}/events",
    ):
        assert path in paths


def test_statuses_404_409_422(server: ServerHandle) -> None:
    assert api(server, "GET", "/workspaces/nope").status_code == 404
    assert api(server, "GET", "/workspaces/default/clusters/nope").status_code == 404
    assert api(server, "GET", "/workspaces/default/experiments/default/jobs/nope").status_code == 404
    assert (
        api(server, "POST", "/workspaces/default/clusters", json={"name": "local", "scale": {"nodes": 1}}).status_code
        == 409
    )
    bad = api(server, "POST", "/workspaces/default/clusters", json={"name": "x", "scale": {"nodes": -1}})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == [{"loc": "scale.nodes", "message": "must be >= 0, got -1"}]
    bad_job = api(server, "POST", "/workspaces/default/experiments/default/jobs", json={"spec": {"cluster": "local"}})
    assert bad_job.status_code == 422 and "exactly one toolkit" in bad_job.json()["error"]["message"]
    unknown = api(server, "POST", "/workspaces/default/experiments/default/jobs", json={"spec": {}, "extra": 1})
    assert unknown.status_code == 422 and "extra: unknown field" in unknown.json()["error"]["message"]


def test_workspaces_and_experiments(server: ServerHandle) -> None:
    c = server.client()
    name = f"ws-{uuid.uuid4().hex[:6]}"
    c.create_workspace(name)
    assert name in [w.name for w in c.list_workspaces()]
    with pytest.raises(AlreadyExists):
        c.create_workspace(name)
    c.create_experiment("exp1", workspace=name)
    assert [e.name for e in c.list_experiments(workspace=name)] == ["default", "exp1"]
    with pytest.raises(AlreadyExists):
        c.create_experiment("exp1", workspace=name)
    c.delete_experiment("exp1", workspace=name)
    with pytest.raises(NotFound):
        c.delete_experiment("exp1", workspace=name)


def test_cluster_lifecycle_and_unavailable_features(server: ServerHandle) -> None:
    c = server.client()
    cluster = c.create_cluster({"name": "tmp", "node": {"cpus": 1}, "scale": {"nodes": 3}})
    assert cluster.current_nodes == 3 and cluster.node_counts.idle == 3
    assert [n.name for n in c.list_nodes("tmp")] == ["node-0", "node-1", "node-2"]
    assert "tmp" in [x.name for x in c.list_clusters()]
    with pytest.raises(InvalidSpec, match=r"mounts\.0\.volume: the workspace has no volume 'v'"):
        c.create_cluster({"name": "mnt", "scale": {"nodes": 1}, "mounts": [{"volume": "v", "path": "data"}]})
    with pytest.raises(InvalidSpec, match="backend: this server runs the local backend"):
        c.create_cluster({"name": "far", "backend": "ray", "scale": {"nodes": 1}})
    with pytest.raises(InvalidSpec, match=r"node.gpus: .* this machine has"):
        c.create_cluster({"name": "gpu", "node": {"gpus": 64}, "scale": {"nodes": 2}})
    c.create_job({"cluster": "tmp", "custom": {"command": "true"}, "name": "on-tmp"})  # fills the name cache
    c.wait_job("on-tmp", timeout=30)
    c.delete_cluster("tmp")
    with pytest.raises(NotFound):
        c.get_cluster("tmp")
    with pytest.raises(NotFound, match="cluster 'tmp' not found"):
        c.create_job({"cluster": "tmp", "custom": {"command": "true"}})
    assert c.get_job("on-tmp").cluster == "tmp", "a job's history keeps its cluster's name"


def test_oversubscription_is_allowed_with_a_warning(server: ServerHandle) -> None:
    c = server.client()
    cluster = c.create_cluster({"name": "big", "node": {"cpus": 64}, "scale": {"nodes": 2}})
    assert any("oversubscribed" in w for w in cluster.warnings)
    c.delete_cluster("big")


def test_job_that_could_never_fit_is_rejected(server: ServerHandle) -> None:
    with pytest.raises(InvalidSpec, match="node_count: cluster 'local' has at most 4 nodes; this job needs 5"):
        server.client().create_job({"cluster": "local", "node_count": 5, "custom": {"command": "true"}})


def test_unknown_cluster_and_duplicate_job_name(server: ServerHandle) -> None:
    c = server.client(experiment=f"e{uuid.uuid4().hex[:6]}")
    with pytest.raises(NotFound, match="cluster 'nope' not found"):
        c.create_job({"cluster": "nope", "custom": {"command": "true"}})
    c.create_job({"name": "once", "cluster": "local", "custom": {"command": "true"}})
    with pytest.raises(AlreadyExists):
        c.create_job({"name": "once", "cluster": "local", "custom": {"command": "true"}})
    c.wait_job("once", timeout=30)


def test_delete_needs_a_finished_job(server: ServerHandle) -> None:
    c = server.client(experiment=f"e{uuid.uuid4().hex[:6]}")
    # A short grace: a SIGTERM that lands while the command is being started waits for it to end (the wrapper's
    # subshell runs its trap only then), and the SIGKILL after the grace ends it.
    spec = {"cluster": "local", "custom": {"command": "sleep 30"}, "limits": {"termination_grace": "5s"}}
    job = c.create_job(spec)
    with pytest.raises(Conflict, match="terminate it before deleting"):
        c.delete_job(job.name)
    c.terminate_job(job.name)
    assert c.wait_job(job.name, timeout=30).state == "terminated"
    with pytest.raises(Conflict, match="already terminated"):
        c.terminate_job(job.name)
    c.delete_job(job.name)
    with pytest.raises(NotFound):
        c.get_job(job.name)


def test_not_found_says_what_was_meant_and_where_a_job_is(server: ServerHandle) -> None:
    c = server.client()
    with pytest.raises(NotFound, match=r"cluster 'locl' not found in workspace 'default' \(did you mean 'local'\?\)"):
        c.create_job({"cluster": "locl", "custom": {"command": "true"}})
    experiment = f"elsewhere{uuid.uuid4().hex[:6]}"
    job = c.create_job({"cluster": "local", "custom": {"command": "true"}}, experiment=experiment)
    with pytest.raises(NotFound, match=rf"it is in experiment '{experiment}' \(-e {experiment}\)"):
        c.get_job(job.name, experiment="default")
    assert c.get_job(job.name).experiment == experiment  # named alone, it is found in its experiment
    with pytest.raises(NotFound, match=r"did you mean 'default'"):
        c.get_job(job.name, experiment=experiment, workspace="defualt")
    with pytest.raises(NotFound, match="not found in any experiment"):
        c.get_job("no-such-job")
    c.create_job({"name": job.name, "cluster": "local", "custom": {"command": "true"}}, experiment="default")
    with pytest.raises(InvalidRequest, match=rf"in experiments default, {experiment} .*say which"):
        server.client().get_job(job.name)
    listed = {(j.name, j.experiment) for j in c.list_jobs(all_experiments=True)}
    assert {(job.name, experiment), (job.name, "default")} <= listed


def test_dry_run_checks_everything_and_stores_nothing(server: ServerHandle) -> None:
    from corral.core.specs import CustomToolkit, JobSpec

    c = server.client(experiment=f"dry{uuid.uuid4().hex[:6]}")
    checked = c.create_job({"name": "would", "cluster": "local", "custom": {"command": "true"}}, dry_run=True)
    assert checked.name == "would" and checked.state == "queued"
    with pytest.raises(NotFound):
        c.get_job("would")
    with pytest.raises(InvalidSpec, match="node_count: cluster 'local' has at most 4 nodes"):
        c.create_job({"cluster": "local", "node_count": 5, "custom": {"command": "true"}}, dry_run=True)
    with pytest.raises(NotFound, match="did you mean 'local'"):
        c.create_job({"cluster": "lcal", "custom": {"command": "true"}}, dry_run=True)
    # The SDK takes a JobSpec as it takes a mapping or a file; env adds variables.
    spec = JobSpec(name="typed", cluster="local", custom=CustomToolkit(command='test "$A$B" = 12'), env={"A": "1"})
    job = c.create_job(spec, env={"B": "2"})
    assert c.wait_job(job.name, timeout=30).state == "succeeded"
    with pytest.raises(AlreadyExists):
        c.create_job(spec, dry_run=True)


def test_health_says_when_the_control_loop_fails(server_factory: object) -> None:
    """A database broken under a running server: the loop's passes fail, and health answers 503 naming the
    kind of error (the cause is in the server's log) instead of a cheerful ok."""
    srv: ServerHandle = server_factory(settings={"CORRAL_SCHEDULER_TICK": "0.3"})  # type: ignore[operator]
    first = api(srv, "GET", "/health")
    assert first.status_code == 200 and first.json()["loop"]["status"] == "ok"
    assert first.json()["loop"]["last_pass_seconds_ago"] < 30
    with sqlite3.connect(srv.database_url.removeprefix("sqlite:///")) as db:
        db.execute("DROP TABLE nodes")
    assert api(srv, "PUT", "/workspaces/default/quota", json={"max_nodes": 3}).status_code == 200  # reload clusters
    until(lambda: httpx.get(f"{srv.url}/api/v1/health").status_code == 503, timeout=30)
    assert httpx.get(f"{srv.url}/api/v1/health").json() == {"status": "unhealthy"}  # without a token
    sick = api(srv, "GET", "/health").json()
    assert sick["status"] == "unhealthy" and sick["loop"]["status"] == "failing"
    assert sick["loop"]["failures_in_a_row"] >= 3 and sick["loop"]["error"].startswith("OperationalError")
    assert "control loop pass failed" in (srv.home / "server.log").read_text()
    status = subprocess.run([CORRAL, "server", "status"], env={**srv.env, "CORRAL_CONFIG": "/nonexistent"},
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert status.returncode == 1 and "unhealthy: its control loop is failing: OperationalError" in status.stderr
