"""Node setup: setup.command on every node as it joins, before any job; a failure makes the node unusable."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import ServerHandle, until


def test_setup_runs_before_jobs_and_a_failure_is_shown(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment=f"s{uuid.uuid4().hex[:8]}")
    name = f"c{uuid.uuid4().hex[:8]}"
    marks = tmp_path / "marks"
    marks.mkdir()
    # Node 1's setup fails; node 0's takes a moment, and a job waits for it.
    command = (
        f'echo setting up $CORRAL_NODE_NAME with $EXTRA; sleep 0.5; [ "$CORRAL_NODE_NAME" = node-1 ] && exit 3; '
        f"touch {marks}/$CORRAL_NODE_NAME"
    )
    c.create_cluster({"name": name, "scale": {"nodes": 2}, "setup": {"command": command, "env": {"EXTRA": "x1"}}})
    assert {n.state for n in c.list_nodes(name)} == {"preparing"}
    job = c.create_job({"cluster": name, "custom": {"command": f"ls {marks}"}})
    assert c.wait_job(job.name, timeout=30).state == "succeeded"
    assert c.job_logs(job.name) == "node-0\n", "the job ran only after its node's setup"
    until(lambda: [n.state for n in c.list_nodes(name)] == ["idle", "unusable"])
    bad = c.list_nodes(name)[1]
    assert bad.error is not None and "exit code 3" in bad.error
    assert c.node_logs(name, "node-1") == "setting up node-1 with x1\n"
    counts = c.get_cluster(name).node_counts
    assert (counts.idle, counts.unusable) == (1, 1)
    # A job needing both nodes cannot start while one is unusable; growing adds a prepared node.
    wide = c.create_job({"cluster": name, "node_count": 2, "custom": {"command": "true"}})
    until(lambda: c.get_job(wide.name).reason == "Resources")
    c.resize_cluster(name, 2)  # same count: the unusable node stays
    assert c.get_job(wide.name).state == "queued"


def test_setup_survives_a_server_restart(server_factory: object, tmp_path: Path) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    c = srv.client()
    c.create_cluster(
        {"name": "slow", "scale": {"nodes": 1}, "setup": {"command": f"echo once >> {tmp_path}/runs; sleep 2"}}
    )
    until(lambda: (tmp_path / "runs").exists())
    srv.kill()
    srv.start()
    c = srv.client()
    until(lambda: [n.state for n in c.list_nodes("slow")] == ["idle"])
    assert (tmp_path / "runs").read_text() == "once\n", "re-attached, not run again"
