"""Retries through a real server: attempts with their own logs, node loss, exit codes, attempts running out."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from corral.backends.local.wrapper import wrapper_pids
from corral.client.client import Client
from corral.core.errors import InvalidRequest
from tests.conftest import ServerHandle, until


@pytest.fixture
def c(server: ServerHandle) -> Client:
    return server.client(experiment=f"t{uuid.uuid4().hex[:8]}")


def cluster(c: Client, nodes: int) -> str:
    name = f"c{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": name, "scale": {"nodes": nodes}})
    return name


def test_listed_exit_code_is_retried_unlisted_is_not_and_attempts_run_out(c: Client) -> None:
    name = cluster(c, 1)
    flaky = 'echo try $CORRAL_ATTEMPT; [ "$CORRAL_ATTEMPT" -lt 3 ] && exit 75; echo ok'
    job = c.create_job({"cluster": name, "custom": {"command": flaky}, "retry": {"exit_codes": [75]}})
    done = c.wait_job(job.name, timeout=60)
    assert done.state == "succeeded"
    assert [(a.number, a.exit_code, a.reason) for a in done.attempts] == [
        (1, 75, "ExitCode"),
        (2, 75, "ExitCode"),
        (3, 0, "Exited"),
    ]
    assert [c.job_logs(job.name, attempt=n) for n in (1, 2, 3)] == ["try 1\n", "try 2\n", "try 3\nok\n"]
    assert c.job_logs(job.name) == "try 3\nok\n", "the latest attempt by default"
    with pytest.raises(InvalidRequest, match=r"attempts 1\.\.3, got 4"):
        c.job_logs(job.name, attempt=4)
    states = [e.to_state for e in c.job_events(job.name)]
    assert states == ["queued", "running", "queued", "running", "queued", "running", "succeeded"]

    unlisted = c.create_job({"cluster": name, "custom": {"command": "exit 76"}, "retry": {"exit_codes": [75]}})
    failed = c.wait_job(unlisted.name, timeout=30)
    assert failed.state == "failed" and len(failed.attempts) == 1 and failed.exit_code == 76

    always = c.create_job(
        {"cluster": name, "custom": {"command": "exit 75"}, "retry": {"max_attempts": 2, "exit_codes": [75]}}
    )
    out = c.wait_job(always.name, timeout=30)
    assert out.state == "failed" and [a.reason for a in out.attempts] == ["ExitCode", "ExitCode"]
    assert out.error is not None and "attempt 2 of retry.max_attempts=2: no attempts left" in out.error.message


def test_node_loss_requeues_to_another_node_and_recover_returns_it(
    c: Client, server: ServerHandle, tmp_path: Path
) -> None:
    name = cluster(c, 2)
    command = 'if [ "$CORRAL_ATTEMPT" = 1 ]; then sleep 300; fi; echo ran on $CORRAL_NODE_IPS attempt $CORRAL_ATTEMPT'
    job = c.create_job({"cluster": name, "custom": {"command": command}})
    until(lambda: c.get_job(job.name).state == "running")
    first_node = c.get_job(job.name).nodes[0]
    # The node's processes vanish without an exit code: SIGKILL its whole process group, wrapper included (once
    # it started: a job is running from its commit, and its wrapper starts just after).
    until(lambda: any(job.uid in path for path in wrapper_pids()))
    live = {path: pid for path, pid in wrapper_pids().items() if job.uid in path}
    assert len(live) == 1
    os.killpg(next(iter(live.values())), signal.SIGKILL)
    done = c.wait_job(job.name, timeout=60)
    assert done.state == "succeeded"
    assert [a.reason for a in done.attempts] == ["NodeLost", "Exited"]
    assert done.attempts[1].nodes != [first_node], "the lost node is not used again"
    lost = next(n for n in c.list_nodes(name) if n.name == first_node)
    assert lost.state == "unusable" and lost.error is not None and "lost" in lost.error
    assert c.recover_node(name, first_node).state == "idle"
