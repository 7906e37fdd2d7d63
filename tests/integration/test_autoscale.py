"""Automatic scale: from 0 nodes to meet the queue, never past max_nodes, and back to 0 after idle_timeout."""

from __future__ import annotations

import uuid

import pytest

from corral.core.errors import InvalidSpec
from tests.conftest import ServerHandle, until


def test_grow_from_zero_and_back_after_idle_timeout(server: ServerHandle) -> None:
    c = server.client(experiment=f"a{uuid.uuid4().hex[:8]}")
    name = f"c{uuid.uuid4().hex[:8]}"
    scale = {"min_nodes": 0, "max_nodes": 3, "idle_timeout": "2s"}
    created = c.create_cluster({"name": name, "scale": scale, "setup": {"command": "sleep 0.3"}})
    assert created.current_nodes == 0 and created.allocation_state == "steady"
    jobs = [c.create_job({"cluster": name, "node_count": 2, "custom": {"command": "sleep 1"}}) for _ in range(2)]
    reasons = []

    def started() -> bool:
        job = c.get_job(jobs[0].name)
        reasons.append(job.reason)
        return job.state != "queued"

    until(started)
    # It waits for the cluster to grow, and says so from the first pass on (it used to say Resources first).
    assert "ClusterScaling" in reasons and "Resources" not in reasons
    peak = 0

    def watch() -> bool:
        nonlocal peak
        peak = max(peak, c.get_cluster(name).current_nodes)
        return all(c.get_job(j.name).state == "succeeded" for j in jobs)

    until(watch, timeout=60)
    assert peak <= 3, "never past max_nodes"
    until(lambda: c.get_cluster(name).current_nodes == 0, timeout=30)
    assert c.get_cluster(name).allocation_state == "steady"
    with pytest.raises(InvalidSpec, match=r"node_count: cluster .* has at most 3 nodes"):
        c.create_job({"cluster": name, "node_count": 4, "custom": {"command": "true"}})


def test_switch_a_manual_cluster_to_automatic(server: ServerHandle) -> None:
    c = server.client(experiment=f"a{uuid.uuid4().hex[:8]}")
    name = f"c{uuid.uuid4().hex[:8]}"
    c.create_cluster({"name": name, "scale": {"nodes": 2}})
    cluster = c.autoscale_cluster(name, min_nodes=1, max_nodes=4, idle_timeout="1s")
    assert cluster.spec.scale.max_nodes == 4
    until(lambda: c.get_cluster(name).current_nodes == 1, timeout=30)  # one idle node goes, min_nodes stays
    with pytest.raises(InvalidSpec, match="min_nodes"):
        c.autoscale_cluster(name, min_nodes=5, max_nodes=4)
