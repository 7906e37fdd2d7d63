"""The server killed with SIGKILL while jobs run, then started again: nothing is lost, nothing runs twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from corral.core.states import JobState, NodeState
from corral.store.db import Database
from corral.store.tables import AttemptRow, JobRow, NodeRow
from corral.store.transitions import transition_job
from tests.conftest import DB_KINDS, until


def wait_for_state(client: object, name: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get_job(name).state != state:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"{name} never became {state}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", DB_KINDS)
def test_sigkill_mid_run_then_restart(server_factory: object, kind: str, tmp_path: Path) -> None:
    srv = server_factory(kind)  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "c3", "scale": {"nodes": 3}})

    def submit(name: str, command: str, nodes: int = 1) -> None:
        c.create_job({"name": name, "cluster": "c3", "node_count": nodes, "custom": {"command": command}})

    submit("a", f"echo run >> {tmp_path}/a.runs; sleep 1; exit 3")  # ends while no server watches
    submit("b", f"echo run >> {tmp_path}/b.runs; sleep 5; echo finished")  # outlives the outage
    submit("c", f"echo run >> {tmp_path}/c.runs", nodes=2)  # queued: needs 2 of the 1 free node
    submit("d", f"echo run >> {tmp_path}/d.runs")  # queued behind c
    wait_for_state(c, "a", "running")
    wait_for_state(c, "b", "running")
    assert c.get_job("c").state == "queued" and c.get_job("d").state == "queued"
    # Killed between "running" and its command's start, a job is rightly requeued (NotStarted): kill once both ran.
    until(lambda: (tmp_path / "a.runs").exists() and (tmp_path / "b.runs").exists())

    srv.kill()
    time.sleep(1.8)
    srv.start()
    c = srv.client()

    a, b, cj, d = (c.wait_job(n, timeout=60) for n in "abcd")
    assert (a.state, a.exit_code, a.error.code if a.error else None) == ("failed", 3, "JobFailed")
    assert (b.state, b.exit_code) == ("succeeded", 0)
    assert c.job_logs("b") == "finished\n"
    assert cj.state == "succeeded" and d.state == "succeeded"
    for name in "abcd":
        assert (tmp_path / f"{name}.runs").read_text() == "run\n" * (2 if name == "c" else 1), name
        states = [e.to_state for e in c.job_events(name)]
        assert states == ["queued", "running", "failed" if name == "a" else "succeeded"], (name, states)
        assert len(c.get_job(name).attempts) == 1
    assert {n.state for n in c.list_nodes("c3")} == {"idle"}


@pytest.mark.parametrize("kind", DB_KINDS)
def test_attempt_marked_running_but_never_launched_is_requeued(
    server_factory: object, kind: str, tmp_path: Path
) -> None:
    """A crash between committing 'running' and starting the processes: the job runs once, later."""
    srv = server_factory(kind)  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    gate = tmp_path / "gate"
    c.create_job(
        {"name": "blocker", "cluster": "one", "custom": {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}}
    )
    c.create_job({"name": "victim", "cluster": "one", "custom": {"command": f"echo run >> {tmp_path}/victim.runs"}})
    wait_for_state(c, "blocker", "running")
    srv.stop()
    gate.touch()
    # What the control loop commits just before it launches, without the launch.
    db = Database(srv.database_url)
    with db.write() as session:
        victim = session.scalars(select(JobRow).where(JobRow.name == "victim")).one()
        node = session.scalars(select(NodeRow).where(NodeRow.cluster_id == victim.cluster_id)).one()
        blocker = session.scalars(select(JobRow).where(JobRow.name == "blocker")).one()
        assert blocker.state == JobState.RUNNING
        now = time.time()
        transition_job(session, victim, JobState.RUNNING, at=now, started_at=now, attempt_count=1)
        session.add(AttemptRow(job_id=victim.id, number=1, node_ids=[node.id], node_names=[node.name], started_at=now))
        node.state = NodeState.RUNNING
        node.job_id = victim.id
    db.dispose()
    srv.start()
    c = srv.client()
    assert c.wait_job("blocker", timeout=60).state == "succeeded"
    victim_job = c.wait_job("victim", timeout=60)
    assert victim_job.state == "succeeded"
    assert (tmp_path / "victim.runs").read_text() == "run\n"
    assert [a.reason for a in victim_job.attempts] == ["NotStarted", "Exited"]
    assert [e.to_state for e in c.job_events("victim")] == ["queued", "running", "queued", "running", "succeeded"]


@pytest.mark.parametrize("kind", DB_KINDS)
def test_sigkill_during_prepare_then_restart(server_factory: object, kind: str, tmp_path: Path) -> None:
    """Prepare is a barrier that survives a restart: one that ended meanwhile lets the processes start,
    one still running is re-attached; every prepare and every process runs exactly once."""
    srv = server_factory(kind)  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "c4", "scale": {"nodes": 4}})
    for name, seconds in (("short", 1.5), ("long", 6)):
        c.create_job(
            {
                "name": name,
                "cluster": "c4",
                "node_count": 2,
                "prepare": {"command": f"echo prep >> {tmp_path}/{name}-prep-$CORRAL_NODE_RANK; sleep {seconds}"},
                "custom": {"command": f"echo run >> {tmp_path}/{name}.runs"},
            }
        )
    wait_for_state(c, "short", "running")
    wait_for_state(c, "long", "running")
    until(lambda: all((tmp_path / f"{name}-prep-{rank}").exists() for name in ("short", "long") for rank in (0, 1)))
    srv.kill()
    time.sleep(2)  # short's prepare ends while no server watches; long's goes on
    srv.start()
    c = srv.client()
    for name in ("short", "long"):
        job = c.wait_job(name, timeout=60)
        assert job.state == "succeeded", (name, job.error)
        assert (tmp_path / f"{name}.runs").read_text() == "run\n" * 2, name
        for rank in (0, 1):
            assert (tmp_path / f"{name}-prep-{rank}").read_text() == "prep\n", (name, rank)
        assert [e.to_state for e in c.job_events(name)] == ["queued", "running", "succeeded"]


def test_sigkill_while_a_job_is_being_preempted(server_factory: object, tmp_path: Path) -> None:
    """The server dies between the preemption notice and the job's end: the job is still requeued, not failed."""
    srv = server_factory()  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "p1", "scale": {"nodes": 1}, "preempt_after": "0s"})
    command = (
        f'trap "sleep 2; echo saved >> {tmp_path}/saves; exit 143" TERM; '
        'if [ "$CORRAL_ATTEMPT" = 1 ]; then sleep 300 & wait; fi; echo attempt $CORRAL_ATTEMPT'
    )
    c.create_job({"name": "low", "cluster": "p1", "priority": "low", "custom": {"command": command}})
    wait_for_state(c, "low", "running")
    c.create_job({"name": "high", "cluster": "p1", "priority": "high", "custom": {"command": "true"}})
    deadline = time.monotonic() + 30
    while [a.reason for a in c.get_job("low").attempts] != ["Preempted"]:  # the notice was given
        assert time.monotonic() < deadline
        time.sleep(0.05)
    srv.kill()
    srv.start()
    c = srv.client()
    assert c.wait_job("high", timeout=60).state == "succeeded"
    low = c.wait_job("low", timeout=60)
    assert low.state == "succeeded" and [a.reason for a in low.attempts] == ["Preempted", "Exited"]
    assert (tmp_path / "saves").read_text() == "saved\n"
