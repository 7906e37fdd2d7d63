"""A node's own commands: exec (its environment, streamed) and preempt (low-priority clusters)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral.core.errors import Conflict, InvalidSpec, NotFound
from tests.conftest import ServerHandle, until


def test_node_exec_streams_in_the_node_environment(server: ServerHandle) -> None:
    c = server.client()
    name = f"c{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": name, "scale": {"nodes": 2}})
    script = 'echo "$CORRAL_NODE_NAME $CORRAL_CLUSTER gpus=$CORRAL_NUM_GPUS"; pwd; echo oops >&2; exit 4'
    events = list(c.node_exec(name, "node-1", ["sh", "-c", script]))
    out = [line for stream, line in events if stream == "stdout"]
    assert out[0] == f"node-1 {name} gpus=0" and out[1].endswith(f"/nodes/default/{name}/node-1")
    assert ("stderr", "oops") in events and events[-1] == ("exit", "4")
    with pytest.raises(NotFound, match="node 'node-9' not found"):
        list(c.node_exec(name, "node-9", ["true"]))
    with pytest.raises(InvalidSpec):
        list(c.node_exec(name, "node-0", []))
    # The CLI passes everything after -- through and exits with the command's code.
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral.cli.main",
            "cluster",
            "node",
            "exec",
            name,
            "node-0",
            "--",
            "sh",
            "-c",
            "echo hi; exit 3",
        ],
        env=server.env,
        capture_output=True,
        text=True,
    )
    assert (cli.returncode, cli.stdout) == (3, "hi\n"), cli.stderr


def test_preempting_a_node_requeues_its_job_and_replaces_the_node(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment=f"p{uuid.uuid4().hex[:8]}")
    name = f"c{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": name, "priority": "low", "scale": {"nodes": 1}})
    command = (
        'trap "echo notice; exit 143" TERM; '
        'if [ "$CORRAL_ATTEMPT" = 1 ]; then sleep 300 & wait; fi; echo attempt $CORRAL_ATTEMPT'
    )
    job = c.create_job({"cluster": name, "custom": {"command": command}, "limits": {"termination_grace": "5s"}})
    until(lambda: c.get_job(job.name).state == "running")
    preempted = c.preempt_node(name, "node-0")
    assert preempted.job == job.name
    done = c.wait_job(job.name, timeout=60)
    assert done.state == "succeeded"
    assert [a.reason for a in done.attempts] == ["Preempted", "Exited"]
    assert c.job_logs(job.name, attempt=1) == "notice\n", "the job had its notice (SIGTERM) before eviction"
    assert c.job_logs(job.name) == "attempt 2\n"
    # The evicted node is gone; a new one took its place (the cluster keeps its target count).
    until(lambda: [(n.name, n.state) for n in c.list_nodes(name)] == [("node-1", "idle")])
    dedicated = f"d{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": dedicated, "scale": {"nodes": 1}})
    with pytest.raises(Conflict, match="only the nodes of a priority: low cluster"):
        c.preempt_node(dedicated, "node-0")
