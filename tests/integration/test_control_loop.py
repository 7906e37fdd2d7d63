"""The control loop driven pass by pass (no thread), on a real database and real processes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from corral.backends.registry import create_backends
from corral.core.errors import UnloadableSpec
from corral.core.models import Job, JobCreate
from corral.core.states import JobState
from corral.scheduler import liveness
from corral.scheduler.loop import Controller
from corral.scheduler.runs import load_for_launch
from corral.server.access import Access
from corral.server.auth import Principal
from corral.server.services import clusters, jobs, submission
from corral.server.services.lookup import NameCache
from corral.server.services.workspaces import ensure_defaults
from corral.server.settings import get_settings
from corral.store.db import Database
from corral.store.tables import ClusterRow, JobEventRow, JobRow
from corral.store.transitions import transition_job
from tests.conftest import process_gone, until


@contextlib.contextmanager
def one_node_loop(database: str, tmp_path: Path) -> Iterator[tuple[Database, Controller]]:
    """A database with a one-node cluster ``c`` and a control loop over it, without its thread."""
    db = Database(database)
    db.migrate()
    backends = create_backends(home=tmp_path, code_dir=tmp_path / "code")
    with db.write() as session:
        ensure_defaults(session)
        clusters.create_cluster(
            session,
            workspace="default",
            spec_data={"name": "c", "scale": {"nodes": 1}},
            max_nodes=10,
            provider=backends.nodes,
        )
    try:
        yield db, Controller(db=db, backends=backends)
    finally:
        backends.close()
        db.dispose()


def submit(
    db: Database, controller: Controller, tmp_path: Path, names: NameCache, cluster: str = "c", command: str = "true"
) -> Job:
    sub = submission.check(
        db,
        names,
        workspace="default",
        request=JobCreate(spec={"cluster": cluster, "custom": {"command": command}}),
        submitted_by="test",
        settings=get_settings(home=tmp_path, max_env_bytes=1 << 16),
    )
    [(job, queued)] = submission.store(db, names, [sub])
    assert queued is not None
    controller.jobs_submitted([queued])
    return job


def test_terminate_that_races_the_end_of_a_job(database: str, tmp_path: Path) -> None:
    """The job ends while the API moves it to terminating, before the loop hears of the request."""
    with one_node_loop(database, tmp_path) as (db, controller):
        job = submit(db, controller, tmp_path, NameCache())
        controller.run_once()  # places and launches it
        deadline = time.monotonic() + 30
        while not controller._inbox:  # its exit is reported by the watcher
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with db.write() as session:  # what POST .../terminate does, before the loop drains the request
            row = session.scalars(select(JobRow).where(JobRow.name == job.name)).one()
            assert transition_job(session, row, JobState.TERMINATING, terminate_requested_at=time.time())
        controller.run_once()
        with db.read() as session:
            row = session.scalars(select(JobRow).where(JobRow.name == job.name)).one()
            states = list(session.scalars(select(JobEventRow.to_state).where(JobEventRow.job_id == row.id)))
        assert row.state == JobState.TERMINATED
        assert states == ["queued", "running", "terminating", "terminated"]
        assert not controller._runs, "the run is forgotten once its end is committed"


def test_a_clusters_spec_is_read_again_once_its_stored_spec_changed(database: str, tmp_path: Path) -> None:
    """The loop keeps each cluster's spec parsed while the stored one stays the same: a job placed after it changed
    is planned by the new one (here: the cluster's default environment, the server's own)."""
    with one_node_loop(database, tmp_path) as (db, controller):
        names = NameCache()
        first, second = (submit(db, controller, tmp_path, names).name for _ in range(2))
        controller.run_once()  # the first runs on the one node: the cluster's spec is parsed
        with db.write() as session:
            cluster = session.scalars(select(ClusterRow).where(ClusterRow.name == "c")).one()
            cluster.spec = {**cluster.spec, "environment": {"server": True}}
            ids = dict(session.execute(select(JobRow.name, JobRow.id).where(JobRow.name.in_([first, second]))).all())
        assert "CORRAL_PYTHON" not in controller._runs_by_job[ids[first]].plan.processes[0].command
        deadline = time.monotonic() + 30
        while not controller._inbox:  # the first one's exit
            assert time.monotonic() < deadline
            time.sleep(0.01)
        controller.run_once()  # ends the first, places the second
        assert "CORRAL_PYTHON" in controller._runs_by_job[ids[second]].plan.processes[0].command


def test_a_job_on_a_cluster_whose_stored_spec_no_longer_loads_is_told_why(database: str, tmp_path: Path) -> None:
    """Placing reads the cluster's stored spec again: one this version does not read makes its jobs unlaunchable,
    each with the field at fault (the loop fails them with InvalidSpec)."""
    with one_node_loop(database, tmp_path) as (db, controller):
        job = submit(db, controller, tmp_path, NameCache())
        with db.write() as session:
            cluster = session.scalars(select(ClusterRow).where(ClusterRow.name == "c")).one()
            cluster.spec = {**cluster.spec, "no_such_field": True}
            job_id = session.scalars(select(JobRow.id).where(JobRow.name == job.name)).one()
        with db.read() as session:
            placed, broken = load_for_launch(session, [job_id])
        assert not placed
        assert "no_such_field" in broken[job_id][1]


def test_a_cluster_whose_stored_spec_no_longer_loads_fails_its_queued_jobs_and_the_others_run(
    database: str, tmp_path: Path
) -> None:
    """As a cluster stored by another version of Corral: the passes go on (they failed, every one, when the policy
    parsed it), its queued jobs fail naming it and the field, the other cluster's job runs; the cluster is shown
    with why, a submission to it is refused saying why, and it can be deleted."""
    with one_node_loop(database, tmp_path) as (db, controller):
        with db.write() as session:
            clusters.create_cluster(session, workspace="default", spec_data={"name": "d", "scale": {"nodes": 1}},
                                    max_nodes=10, provider=controller._provider)  # fmt: skip
        names = NameCache()
        good, doomed = submit(db, controller, tmp_path, names, "c"), submit(db, controller, tmp_path, names, "d")
        with db.write() as session:
            cluster = session.scalars(select(ClusterRow).where(ClusterRow.name == "d")).one()
            cluster.spec = {**cluster.spec, "no_such_field": True}
        controller.run_once()  # as the first pass of a server started on that database
        with db.read() as session:
            rows = {r.name: r for r in session.scalars(select(JobRow).where(JobRow.name.in_([good.name, doomed.name])))}
            assert rows[good.name].state == JobState.RUNNING
            failed = rows[doomed.name]
            assert (failed.state, failed.error_code) == (JobState.FAILED, "InvalidSpec")
            assert "cluster 'd'" in (failed.error_message or "") and "no_such_field" in (failed.error_message or "")
            shown = clusters.get_cluster(session, workspace="default", name="d")
            assert shown.spec is None and "no_such_field" in shown.warnings[0]
        with pytest.raises(UnloadableSpec, match=r"cluster 'd'.*no_such_field"):
            submit(db, controller, tmp_path, NameCache(), "d")
        controller.run_once()  # the passes go on (run_once raises what fails a pass)
        with db.write() as session:
            clusters.delete_cluster(session, workspace="default", name="d")


def test_a_job_whose_stored_spec_no_longer_loads_fails_alone(database: str, tmp_path: Path) -> None:
    """One bad row must not stop every pass: it fails with InvalidSpec, the job behind it runs."""
    with one_node_loop(database, tmp_path) as (db, controller):
        names = NameCache()
        made = [submit(db, controller, tmp_path, names).name for _ in range(2)]
        with db.write() as session:  # as an older server, or a bad name from a URL, could have stored it
            row = session.scalars(select(JobRow).where(JobRow.name == made[0])).one()
            row.spec = {**row.spec, "experiment": " "}
        controller.run_once()  # fails the bad job (which the policy had given the one node)
        controller.run_once()  # the good one gets the node
        with db.read() as session:
            bad = session.scalars(select(JobRow).where(JobRow.name == made[0])).one()
            good = session.scalars(select(JobRow).where(JobRow.name == made[1])).one()
            assert (bad.state, bad.error_code) == (JobState.FAILED, "InvalidSpec")
            assert "experiment" in (bad.error_message or "")
            assert good.state == JobState.RUNNING
            shown = jobs.get_job(session, workspace="default", experiment="default", name=made[0])
            assert shown.spec is None and shown.toolkit == "custom" and shown.state == JobState.FAILED
            admin = Access(Principal(name="admin", is_admin=True), "default", "admin")
            found = jobs.delete_job(session, workspace="default", experiment="default", name=made[0], access=admin)
            assert found[0][0] == bad.job_dir


def test_a_running_job_whose_stored_spec_no_longer_loads_at_restart_fails_and_its_processes_end(
    database: str, tmp_path: Path
) -> None:
    """Found running by a new server that cannot rebuild its plan: the job fails with InvalidSpec, its node is
    free, and its processes, which no server watches any more, are ended rather than left running."""
    pid_file = tmp_path / "pid"
    with one_node_loop(database, tmp_path) as (db, controller):
        job = submit(db, controller, tmp_path, NameCache(), command=f"echo $$ > {pid_file}; exec sleep 300")
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            controller.run_once()
            assert time.monotonic() < deadline, "the job's command never started"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        with db.write() as session:  # as a newer server might have stored it, or a hand edit
            row = session.scalars(select(JobRow).where(JobRow.name == job.name)).one()
            row.spec = {**row.spec, "experiment": " "}
        # A new server on the same database and machine: its own backends and control loop.
        backends = create_backends(home=tmp_path, code_dir=tmp_path / "code")
        try:
            Controller(db=db, backends=backends).recover()
            with db.read() as session:
                row = session.scalars(select(JobRow).where(JobRow.name == job.name)).one()
                assert (row.state, row.error_code) == (JobState.FAILED, "InvalidSpec")
                assert "experiment" in (row.error_message or "")
                node_states = [n.state for n in clusters.list_nodes(session, workspace="default", cluster="c")]
            assert node_states == ["idle"]
            until(lambda: process_gone(pid), timeout=10)  # the failed job's process ended
        finally:
            backends.close()


def test_liveness_tells_a_stuck_loop_from_a_passing_one(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that never returns leaves the last pass ever further behind: health says stuck."""
    monkeypatch.setattr(liveness, "STUCK_AFTER", 0.5)
    with one_node_loop(database, tmp_path) as (_db, controller):
        controller._tick = 0.05
        controller._liveness.tick = 0.05
        controller.start()
        deadline = time.monotonic() + 10
        while controller.health()["last_pass_seconds_ago"] > 0.2:  # type: ignore[operator]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert controller.health()["status"] == "ok"
        hold = threading.Event()
        monkeypatch.setattr(controller, "run_once", hold.wait)  # the next pass blocks, as a hung one would
        time.sleep(1.0)
        assert controller.health()["status"] == "stuck"
        hold.set()
        controller.stop()
        assert controller.health()["status"] == "stopped"
