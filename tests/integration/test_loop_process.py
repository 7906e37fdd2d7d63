"""The control loop in a process of its own (``CORRAL_LOOP_PROCESS``): it hears every request of the API, the API
hears every job it ends, it dies with the server, and the server starts it again when it dies alone."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from corral.store.db import Database
from tests.conftest import DB_KINDS, ServerHandle, until
from tests.integration.test_crash import wait_for_state

LOOP_MODULE = b"corral.server.loop_process"


def loop_pid(srv: ServerHandle) -> int | None:
    """The pid of the server's loop process, or None where the loop is a thread of the server."""
    assert srv.process is not None
    for children in Path(f"/proc/{srv.process.pid}/task").glob("*/children"):
        for child in children.read_text().split():
            try:
                if LOOP_MODULE in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
            except OSError:
                continue
    return None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def health(srv: ServerHandle) -> dict[str, object]:
    answer = httpx.get(f"{srv.url}/api/v1/health", headers={"Authorization": f"Bearer {srv.token}"}, timeout=10)
    return answer.json()["loop"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("kind", "own_process"), [*((kind, True) for kind in DB_KINDS), ("sqlite", False)], ids=lambda v: str(v)
)
def test_every_request_reaches_the_loop_and_every_end_the_api(
    server_factory: object, kind: str, own_process: bool, tmp_path: Path
) -> None:
    """Submissions (one and a batch), a terminate of a running job and of a queued one, a resize, and the waits
    for jobs' ends: the same with the loop a process of its own as with the loop a thread of the server."""
    srv: ServerHandle = server_factory(kind, settings={"CORRAL_LOOP_PROCESS": str(own_process).lower()})  # type: ignore[operator]
    assert (loop_pid(srv) is not None) == own_process
    c = srv.client()
    c.create_cluster({"name": "two", "scale": {"nodes": 2}})
    gate = tmp_path / "gate"
    c.create_job({"name": "held", "cluster": "two", "custom": {"command": f"until [ -e {gate} ]; do sleep 0.05; done"}})
    c.create_job({"name": "wide", "cluster": "two", "node_count": 2, "custom": {"command": "true"}})
    wait_for_state(c, "held", "running")
    assert c.get_job("wide").state == "queued"
    c.terminate_job("wide")  # a queued job leaves the queue
    assert c.wait_job("wide", timeout=30).state == "terminated"
    batch = c.create_jobs([{"cluster": "two", "custom": {"command": "echo $CORRAL_JOB_NAME"}}] * 20)
    for job in batch:
        ended = c.wait_job(job.name, timeout=60)
        assert ended.state == "succeeded" and c.job_logs(job.name) == f"{job.name}\n"
    c.terminate_job("held")  # a running job is signalled
    assert c.wait_job("held", timeout=30).state == "terminated"
    c.resize_cluster("two", 3)  # the policy reloaded: a third node
    until(lambda: len(c.list_nodes("two")) == 3, timeout=30)
    c.create_job({"name": "wider", "cluster": "two", "node_count": 3, "custom": {"command": "true"}})
    assert c.wait_job("wider", timeout=60).state == "succeeded"
    loop = health(srv)
    assert loop["status"] == "ok" and loop.get("pid") == loop_pid(srv)


def test_a_loop_process_that_dies_alone_is_started_again_and_loses_nothing(
    server_factory: object, tmp_path: Path
) -> None:
    """SIGKILL to the loop's process while a job runs: the server says so, starts another, which recovers the
    run as a restarted server would; the job ends once, and new jobs run."""
    srv: ServerHandle = server_factory(settings={"CORRAL_LOOP_PROCESS": "true"})  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    gate = tmp_path / "gate"
    runs = tmp_path / "runs"
    c.create_job({"name": "long", "cluster": "one",
                  "custom": {"command": f"echo run >> {runs}; until [ -e {gate} ]; do sleep 0.05; done"}})  # fmt: skip
    until(runs.exists)  # started: killed before, the attempt would be NotStarted, and a second one run
    first = loop_pid(srv)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    until(lambda: (pid := loop_pid(srv)) is not None and pid != first, timeout=30)
    until(lambda: health(srv)["status"] == "ok", timeout=30)
    gate.touch()
    assert c.wait_job("long", timeout=60).state == "succeeded"
    assert runs.read_text() == "run\n"
    assert len(c.get_job("long").attempts) == 1
    c.create_job({"name": "after", "cluster": "one", "custom": {"command": "true"}})
    assert c.wait_job("after", timeout=60).state == "succeeded"
    assert "the control loop's process ended (exit -9): starting it again" in (srv.home / "server.log").read_text()


@pytest.mark.parametrize("kind", DB_KINDS)
def test_a_killed_server_takes_its_loop_process_with_it(server_factory: object, kind: str, tmp_path: Path) -> None:
    """No loop outlives its server (it would run jobs beside the next server's loop): SIGKILL to the server ends
    its loop's process; a new server on the home starts at once and recovers the job."""
    srv: ServerHandle = server_factory(kind, settings={"CORRAL_LOOP_PROCESS": "true"})  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    gate, started = tmp_path / "gate", tmp_path / "started"
    c.create_job({"name": "long", "cluster": "one",
                  "custom": {"command": f"touch {started}; until [ -e {gate} ]; do sleep 0.05; done"}})  # fmt: skip
    until(started.exists)
    loop = loop_pid(srv)
    assert loop is not None
    srv.kill()
    until(lambda: not alive(loop), timeout=10)
    srv.start()
    c = srv.client()
    gate.touch()
    assert c.wait_job("long", timeout=60).state == "succeeded"
    assert len(c.get_job("long").attempts) == 1


def test_sqlite_writers_of_two_processes_queue_on_the_file_lock(tmp_path: Path) -> None:
    """A writer in another process holds the lock file beside the database for its whole transaction (this
    process's writers wait on it, woken at once, not by SQLite's sleeping busy handler), and lets go after."""
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    Database(url).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\nfrom sqlalchemy import text\nfrom corral.store.db import Database\n"
            f"db = Database({url!r})\n"
            "with db.write() as s:\n"
            "    s.execute(text(\"insert into workspaces (name, created_at) values ('held', 0)\"))\n"
            "    print('in', flush=True)\n"
            "    sys.stdin.readline()\n"
        )],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "in\n"
    with open(tmp_path / "corral.db-writers", "rb") as lock:
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with its transaction
        fcntl.flock(lock, fcntl.LOCK_UN)
    from sqlalchemy import text

    with Database(url).write() as session:
        assert session.execute(text("select count(*) from workspaces where name = 'held'")).scalar() == 1


def test_the_loop_stays_a_thread_with_ray_and_a_setting_that_asks_otherwise_is_refused(tmp_path: Path) -> None:
    """With the Ray backend the server's own node commands need the machines the loop's backend follows: the
    loop is a thread there by default, and asking for its own process stops the server with the reason."""
    from corral.server.settings import InvalidSettings, get_settings

    assert get_settings(home=tmp_path, loop_process=False).runs_loop_process is False
    assert get_settings(home=tmp_path, ray_address="198.18.0.1:6379").runs_loop_process is False
    with pytest.raises(InvalidSettings, match="CORRAL_LOOP_PROCESS=true: with the Ray backend"):
        get_settings(home=tmp_path, ray_address="198.18.0.1:6379", loop_process=True)
    started = subprocess.run(
        [sys.executable, "-m", "corral.server", "--home", str(tmp_path / "home")],
        env={**os.environ, "CORRAL_LOOP_PROCESS": "true", "CORRAL_RAY_ADDRESS": "198.18.0.1:6379"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode == 1, started.stderr
    assert started.stderr.startswith("error: CORRAL_LOOP_PROCESS=true: with the Ray backend"), started.stderr
    with pytest.raises(InvalidSettings, match=r"^CORRAL_SCHEDULER_TICK: Input should be a valid number"):
        get_settings(home=tmp_path, scheduler_tick="soon")  # any setting is named by its variable
