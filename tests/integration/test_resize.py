"""Clusters resized while jobs run: growing, and each deallocation option of shrinking."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from corral.client.client import Client
from corral.core.errors import InvalidSpec
from tests.conftest import ServerHandle, until


@pytest.fixture
def c(server: ServerHandle) -> Client:
    return server.client(experiment=f"r{uuid.uuid4().hex[:8]}")


def new_cluster(c: Client, nodes: int, deallocation: str = "requeue") -> str:
    name = f"c{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": name, "scale": {"nodes": nodes, "deallocation": deallocation}})
    return name


def steady(c: Client, name: str, nodes: int) -> bool:
    cluster = c.get_cluster(name)
    return cluster.allocation_state == "steady" and cluster.current_nodes == nodes


def test_grow_lets_a_waiting_job_start(c: Client) -> None:
    name = new_cluster(c, 1)
    job = c.create_job({"cluster": name, "node_count": 1, "custom": {"command": "true"}})
    assert c.wait_job(job.name, timeout=30).state == "succeeded"
    grown = c.resize_cluster(name, 3)
    assert grown.target_nodes == 3
    until(lambda: steady(c, name, 3))
    assert [n.name for n in c.list_nodes(name)] == ["node-0", "node-1", "node-2"]
    wide = c.create_job({"cluster": name, "node_count": 3, "custom": {"command": "true"}})
    assert c.wait_job(wide.name, timeout=30).state == "succeeded"
    with pytest.raises(InvalidSpec, match="nodes: must be >= 0, got -1"):
        c.resize_cluster(name, -1)


def test_shrink_takes_idle_nodes_first(c: Client, tmp_path: Path) -> None:
    name = new_cluster(c, 3)
    gate = tmp_path / "gate"
    busy = c.create_job({"cluster": name, "custom": {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}})
    until(lambda: c.get_job(busy.name).state == "running")
    c.resize_cluster(name, 1)
    until(lambda: steady(c, name, 1))
    assert c.get_job(busy.name).state == "running", "the busy node stays"
    gate.touch()
    assert c.wait_job(busy.name).state == "succeeded"


@pytest.mark.parametrize("deallocation", ["requeue", "terminate", "wait"])
def test_shrink_a_busy_node(c: Client, tmp_path: Path, deallocation: str) -> None:
    name = new_cluster(c, 1, deallocation)
    gate = tmp_path / "gate"
    command = f'if [ "$CORRAL_ATTEMPT" = 1 ]; then while [ ! -e {gate} ]; do sleep 0.05; done; fi; echo done'
    job = c.create_job({"cluster": name, "custom": {"command": command}, "limits": {"termination_grace": "5s"}})
    until(lambda: c.get_job(job.name).state == "running")
    c.resize_cluster(name, 0)
    if deallocation == "wait":
        until(lambda: [n.state for n in c.list_nodes(name)] == ["leaving"])
        assert c.get_cluster(name).allocation_state == "resizing"
        time.sleep(0.5)
        assert c.get_job(job.name).state == "running", "the job finishes on its leaving node"
        gate.touch()
        assert c.wait_job(job.name).state == "succeeded"
        until(lambda: steady(c, name, 0))
        return
    until(lambda: steady(c, name, 0))
    if deallocation == "terminate":
        ended = c.wait_job(job.name, timeout=30)
        assert ended.state == "terminated"
        assert [e.reason for e in c.job_events(job.name)][-2:] == ["NodeRemoved", "Terminated"]
        return
    # requeue: back in the queue, waiting for nodes; it runs again once the cluster grows back.
    until(lambda: c.get_job(job.name).state == "queued")
    assert [a.reason for a in c.get_job(job.name).attempts] == ["NodeRemoved"]
    c.resize_cluster(name, 1)
    done = c.wait_job(job.name, timeout=30)
    assert done.state == "succeeded" and [a.reason for a in done.attempts] == ["NodeRemoved", "Exited"]
