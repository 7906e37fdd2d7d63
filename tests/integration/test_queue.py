"""The queue's policy through a real server: priority, fair share, quotas, backfill, preemption, reasons, users."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from corral.client.client import Client
from corral.core.errors import Forbidden
from tests.conftest import ServerHandle, passable, until


@pytest.fixture
def admin(server: ServerHandle) -> Client:
    return server.client(experiment=f"q{uuid.uuid4().hex[:8]}")


def cluster(c: Client, nodes: int, **extra: object) -> str:
    name = f"c{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": name, "scale": {"nodes": nodes}, **extra})
    return name


def blocker(c: Client, cluster_name: str, gate: Path, **extra: object) -> str:
    """A job that holds a node until ``gate`` exists."""
    job = c.create_job(
        {"cluster": cluster_name, "custom": {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}, **extra}
    )
    until(lambda: c.get_job(job.name).state == "running")
    return job.name


def test_priority_order_and_reasons(admin: Client, tmp_path: Path) -> None:
    name = cluster(admin, 1)
    gate, order = tmp_path / "gate", tmp_path / "order"
    blocker(admin, name, gate)
    for priority in ("low", "normal", "high"):
        admin.create_job(
            {
                "name": priority,
                "cluster": name,
                "priority": priority,
                "custom": {"command": f"echo {priority} >> {order}"},
            }
        )
    expected = ["Resources", "Priority", "Priority"]
    until(lambda: [admin.get_job(p).reason for p in ("high", "normal", "low")] == expected)
    gate.touch()
    for p in ("low", "normal", "high"):
        assert admin.wait_job(p, timeout=30).state == "succeeded"
    assert order.read_text().split() == ["high", "normal", "low"]
    assert admin.get_job("high").reason is None, "a reason is only for waiting jobs"


def test_fair_share_between_two_users(server: ServerHandle, admin: Client, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    alice = Client(server=server.url, token=admin.create_user(f"alice-{tag}").token, experiment=admin.experiment)
    bob = Client(server=server.url, token=admin.create_user(f"bob-{tag}").token, experiment=admin.experiment)
    for who in (f"alice-{tag}", f"bob-{tag}"):
        admin.set_member(who, "contributor")
    with pytest.raises(Forbidden):
        alice.create_user("mallory")
    name = cluster(admin, 1)
    # Alice has used the cluster before (2 node-seconds); Bob has not.
    assert (
        alice.wait_job(alice.create_job({"cluster": name, "custom": {"command": "sleep 2"}}).name).state == "succeeded"
    )
    gate, order = tmp_path / "gate", passable(tmp_path) / "order"
    order.touch(mode=0o666)  # written by both users' jobs (each as their own Unix account when the server is root)
    order.chmod(0o666)
    blocker(admin, name, gate)
    for who, c in (("a1", alice), ("a2", alice), ("b1", bob), ("b2", bob)):
        c.create_job({"name": who, "cluster": name, "custom": {"command": f"echo {who} >> {order}"}})
    assert admin.get_job("b1").submitted_by == f"bob-{tag}"
    gate.touch()
    for who in ("a1", "a2", "b1", "b2"):
        admin.wait_job(who, timeout=30)
    assert order.read_text().split() == ["b1", "b2", "a1", "a2"], "the user with less usage goes first"
    usage = {row.name: row for row in admin.usage().by_user}
    assert usage[f"alice-{tag}"].jobs == 3 and usage[f"alice-{tag}"].node_hours >= 2 / 3600
    assert usage[f"bob-{tag}"].jobs == 2
    alice.close()
    bob.close()


def test_quota_wait_with_reason(server: ServerHandle, tmp_path: Path) -> None:
    ws = f"w{uuid.uuid4().hex[:8]}"
    c = server.client(workspace=ws)
    c.create_workspace(ws)
    name = cluster(c, 2)
    assert c.set_quota(max_nodes=1).quota.max_nodes == 1
    gate = tmp_path / "gate"
    blocker(c, name, gate)
    waiting = c.create_job({"cluster": name, "custom": {"command": "true"}})
    until(lambda: c.get_job(waiting.name).reason == "Quota")
    assert c.get_job(waiting.name).state == "queued", "a node is idle, but the workspace is at its quota"
    gate.touch()
    assert c.wait_job(waiting.name, timeout=30).state == "succeeded"


def test_backfill_never_delays_the_head(admin: Client, tmp_path: Path) -> None:
    name = cluster(admin, 2)
    gate = tmp_path / "gate"
    running = blocker(admin, name, gate, limits={"max_wall_clock": "120s"})
    head = admin.create_job({"name": "head", "cluster": name, "node_count": 2, "custom": {"command": "true"}})
    short = admin.create_job(
        {"name": "short", "cluster": name, "custom": {"command": "true"}, "limits": {"max_wall_clock": "30s"}}
    )
    unbounded = admin.create_job({"name": "unbounded", "cluster": name, "custom": {"command": "true"}})
    long = admin.create_job(
        {"name": "long", "cluster": name, "custom": {"command": "true"}, "limits": {"max_wall_clock": "1h"}}
    )
    assert admin.wait_job(short.name, timeout=30).state == "succeeded", "ends before the head could start"
    assert admin.get_job(head.name).reason == "Resources"
    until(lambda: admin.get_job(unbounded.name).reason == "Priority")
    assert admin.get_job(long.name).reason == "Priority", "would run past the head's start"
    gate.touch()
    ended = [admin.wait_job(j, timeout=30) for j in (running, head.name, unbounded.name, long.name)]
    assert all(j.state == "succeeded" for j in ended)
    assert ended[1].started_at <= ended[2].started_at and ended[1].started_at <= ended[3].started_at  # type: ignore[operator]


def test_preemption_requeues_the_low_job(admin: Client, tmp_path: Path) -> None:
    name = cluster(admin, 1, preempt_after="1s")
    low = admin.create_job(
        {
            "name": "low",
            "cluster": name,
            "priority": "low",
            # The first attempt runs until preempted; the second ends at once.
            "custom": {"command": 'if [ "$CORRAL_ATTEMPT" = 1 ]; then sleep 300; fi; echo attempt $CORRAL_ATTEMPT'},
            "limits": {"termination_grace": "5s"},
        }
    )
    until(lambda: admin.get_job(low.name).state == "running")
    high = admin.create_job({"name": "high", "cluster": name, "priority": "high", "custom": {"command": "true"}})
    assert admin.wait_job(high.name, timeout=60).state == "succeeded"
    done = admin.wait_job(low.name, timeout=60)
    assert done.state == "succeeded" and admin.job_logs(low.name) == "attempt 2\n"
    assert [a.reason for a in done.attempts] == ["Preempted", "Exited"]
    states = [e.to_state for e in admin.job_events(low.name)]
    assert states == ["queued", "running", "queued", "running", "succeeded"], states
    assert done.attempts[1].started_at >= admin.get_job(high.name).ended_at  # type: ignore[operator]
