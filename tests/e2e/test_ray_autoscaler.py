"""A Corral cluster that grows and shrinks through Ray's own autoscaler: the hosts' Ray head runs it with a node
provider that makes and removes namespace hosts (``scripts/netns_node_provider.py``), as a cloud's would make
virtual machines. The server here sees only the machines of that node type (``corral_auto``), none at first.
"""

from __future__ import annotations

import subprocess
import time

from tests.conftest import ServerHandle, free_port, make_database, passable, until
from tests.e2e.test_ray import host_ip, ray_driver
from tests.ray_hosts import NODE_ROOT, RayHosts


def autoscaled_machines() -> set[str]:
    """The addresses of the alive machines Ray's autoscaler made (they offer ``corral_auto``)."""
    import ray

    return {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("corral_auto")}


def host_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("crl-h")}


def test_rays_autoscaler_starts_machines_for_a_job_and_switches_them_off_once_idle(
    ray_hosts: RayHosts, tmp_path_factory
) -> None:
    ray_driver(ray_hosts)
    assert autoscaled_machines() == set()
    fixed = host_namespaces()
    home = passable(tmp_path_factory.mktemp("ray-auto-home"))
    settings = {
        "CORRAL_RAY_ADDRESS": ray_hosts.address,
        "CORRAL_RAY_NODE_ROOT": NODE_ROOT,
        "CORRAL_RAY_NODE_RESOURCE": "corral_auto",
        "CORRAL_RAY_NAMESPACE": "corral-auto",
    }
    srv = ServerHandle(home, free_port(), make_database("sqlite", home)[0], settings=settings)
    srv.start()
    try:
        c = srv.client()
        spec = {"min_nodes": 0, "max_nodes": 2, "idle_timeout": "2s"}
        c.create_cluster({"name": "auto", "backend": "ray", "scale": spec, "setup": {"command": "hostname -I"}})
        assert c.list_nodes("auto") == []
        started = time.monotonic()
        job = c.create_job({"cluster": "auto", "node_count": 2, "custom": {"command": "hostname -I"}}, name="grow")
        ended = c.wait_job(job.name, timeout=120)
        print(f"\nsubmit -> succeeded on 2 machines Ray's autoscaler started: {time.monotonic() - started:.1f} s")
        assert ended.state == "succeeded", ended.error
        made = autoscaled_machines()
        ran_on = {host_ip(c.job_logs(job.name, rank=rank)) for rank in range(2)}
        assert len(ran_on) == 2 and ran_on <= made and not ran_on & set(ray_hosts.ips), (ran_on, made)
        for node in c.list_nodes("auto"):  # each machine ran the setup as it joined
            assert host_ip(c.node_logs("auto", node.name)) == node.ip

        idle = time.monotonic()
        until(lambda: c.list_nodes("auto") == [], timeout=60)  # Corral lets its idle nodes go ...
        until(lambda: autoscaled_machines() == set(), timeout=90)  # ... and Ray's autoscaler switches them off
        print(f"idle -> machines switched off: {time.monotonic() - idle:.1f} s")
        until(lambda: host_namespaces() == fixed, timeout=10)  # gone, not only out of Ray
    finally:
        for client in srv.clients:
            client.close()
        srv.stop()
