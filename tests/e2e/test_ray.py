"""Clusters on Ray, end to end through a real server, on separate hosts (``tests/ray_hosts.py``: network
namespaces with addresses of their own and private node disks, one Ray worker each).

The server is a Ray driver (``CORRAL_RAY_ADDRESS``); nothing of a node's disk is visible from here, so every
log and exit code the tests see came back through the agents.
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.client.client import Client
from tests.conftest import ServerHandle, free_port, make_database, passable, until
from tests.data_stores import start_s3_server
from tests.e2e.test_distributed import EXAMPLES, mpi_only, torch_only
from tests.ray_hosts import NODE_ROOT, RayHosts

CLUSTER = "hosts"


@pytest.fixture(scope="module")
def srv(ray_hosts: RayHosts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server on the Ray hosts, with a 2-node cluster whose setup records each host's address."""
    home = passable(tmp_path_factory.mktemp("ray-home"))
    settings = {"CORRAL_RAY_ADDRESS": ray_hosts.address, "CORRAL_RAY_NODE_ROOT": NODE_ROOT}
    handle = ServerHandle(home, free_port(), make_database("sqlite", home)[0], settings=settings)
    handle.start()
    with handle.client() as c:
        c.create_cluster(
            {
                "name": CLUSTER,
                "backend": "ray",
                "scale": {"nodes": 2},
                "setup": {"command": "hostname -I"},
                "environment": "server",
            }  # the examples' torch and mpi4py: Corral's own environment
        )
        until(lambda: [n.state for n in c.list_nodes(CLUSTER)] == ["idle", "idle"], timeout=60)
    yield handle
    for c in handle.clients:
        c.close()
    handle.stop()


def host_ip(text: str) -> str:
    found = re.search(r"198\.18\.0\.\d+", text)
    assert found, text
    return found.group(0)


def test_nodes_are_the_hosts_and_their_setup_ran_on_each(srv: ServerHandle, ray_hosts: RayHosts) -> None:
    c = srv.client()
    nodes = c.list_nodes(CLUSTER)
    assert len({n.ip for n in nodes}) == 2 and {n.ip for n in nodes} <= set(ray_hosts.ips)
    for node in nodes:  # the setup's log is on the host's own disk: read back through its agent
        assert host_ip(c.node_logs(CLUSTER, node.name)) == node.ip
    assert not Path(NODE_ROOT, "default").exists(), "node files must not be on the server's disk"


def test_each_hosts_metrics_come_back_as_they_are_reported(srv: ServerHandle) -> None:
    """Each rank writes its metrics file on its own host; they come back like its logs, into its series."""
    c = srv.client(experiment="hosts-metrics")
    code = (
        "import os, socket; from corral import runtime; rank = int(os.environ['CORRAL_NODE_RANK']); "
        "[runtime.report(step=s, loss=rank * 10.0 + s) for s in range(3)]"
    )
    spec = {"cluster": CLUSTER, "node_count": 2, "custom": {"command": f'python3 -c "{code}"'}}
    job = c.wait_job(c.create_job(spec).name, timeout=60)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="stderr"))
    until(lambda: sum(s.last_step == 2 for s in c.job_metrics(job.name)) == 2, timeout=30)
    for rank in (0, 1):
        points = c.job_metric(job.name, "loss", rank=rank).points
        assert [(p.step, p.value) for p in points] == [(s, rank * 10.0 + s) for s in range(3)]


def test_node_exec_runs_on_that_host(srv: ServerHandle) -> None:
    c = srv.client()
    node = c.list_nodes(CLUSTER)[1]
    output = list(c.node_exec(CLUSTER, node.name, ["sh", "-c", "hostname -I; echo $CORRAL_NODE_NAME >&2; exit 3"]))
    assert host_ip(next(line for stream, line in output if stream == "stdout")) == node.ip
    assert ("stderr", node.name) in output and output[-1] == ("exit", "3")


def test_each_rank_runs_on_its_own_host_and_its_logs_come_back(srv: ServerHandle) -> None:
    c = srv.client(experiment="hosts")
    # Rank 0 fails first (rank 1 later, if it is not ended before): its code is the job's.
    command = "hostname -I; echo nodes=$CORRAL_NODE_IPS; echo to-stderr >&2; "
    command += "[ $CORRAL_NODE_RANK = 0 ] || sleep 2; exit 4"
    spec = {"cluster": CLUSTER, "node_count": 2, "custom": {"command": command}}
    job = c.wait_job(c.create_job(spec, name="where").name, timeout=60)
    assert job.state == "failed" and job.error is not None and "exited with code 4" in job.error.message, job.error
    nodes = {n.name: n.ip for n in c.list_nodes(CLUSTER)}
    ips = [host_ip(c.job_logs(job.name, rank=rank)) for rank in range(2)]
    assert ips == [nodes[name] for name in job.nodes] and len(set(ips)) == 2
    assert f"nodes={','.join(ips)}" in c.job_logs(job.name, rank=1)
    assert c.job_logs(job.name, rank=0, stream="stderr") == "to-stderr\n"
    assert c.job_logs(job.name, rank=1, stream="stderr").startswith("to-stderr\n")  # then ended by the failure


def test_a_users_job_runs_as_their_account_on_every_host(srv: ServerHandle) -> None:
    admin = srv.client()
    name = f"rayuser-{uuid.uuid4().hex[:6]}"
    user = Client(server=srv.url, token=admin.create_user(name).token, experiment="theirs")
    admin.set_member(name, "contributor", workspace="default")
    # Its account writes its working directory on each host's own disk, and the job's shared folder.
    command = 'id -un; touch "$CORRAL_JOB_TEMP/mine" && echo wrote; '
    command += 'echo "$CORRAL_NODE_RANK" > "$CORRAL_SHARED_JOB_TEMP/r$CORRAL_NODE_RANK"'
    with user:
        spec = {"cluster": CLUSTER, "node_count": 2, "custom": {"command": command}}
        job = user.wait_job(user.create_job(spec).name, timeout=60)
        assert job.state == "succeeded", (job.error, user.job_logs(job.name, stream="stderr"))
        account = next(u.unix_user for u in admin.list_users() if u.name == name)
        assert account and [user.job_logs(job.name, rank=r) for r in range(2)] == [f"{account}\nwrote\n"] * 2
        shared = Path(job.job_dir, "shared")
        assert sorted(p.name for p in shared.iterdir()) == ["r0", "r1"]
        assert {p.stat().st_uid for p in shared.iterdir()} == {pwd.getpwnam(account).pw_uid}


def reservations() -> dict[str, str]:
    """Address of the machine -> its Ray node id, for each machine Corral holds with a placement group."""
    from ray.util.placement_group import placement_group_table

    groups = placement_group_table().values()
    return {
        g["name"].removeprefix("corral-node-"): g["bundles_to_node_id"][0]
        for g in groups
        if g["name"].startswith("corral-node-") and g["state"] == "CREATED"
    }


def ray_driver(hosts: RayHosts) -> dict[str, str]:
    """This test process as a driver of the hosts' Ray cluster; address -> Ray node id of each alive machine."""
    import ray

    if not ray.is_initialized():
        ray.init(address=hosts.address, namespace="corral", logging_level="ERROR", log_to_driver=False)
    return {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_ray_sees_the_machines_corral_holds(srv: ServerHandle, ray_hosts: RayHosts) -> None:
    machines = ray_driver(ray_hosts)
    c = srv.client()
    held = {n.ip for n in c.list_nodes(CLUSTER)}
    until(lambda: reservations() == {ip: machines[ip] for ip in held}, timeout=10)  # each pinned to its machine


def test_tensorflow_config_names_both_hosts(srv: ServerHandle, tmp_path: Path) -> None:
    c = srv.client(experiment="tensorflow")
    root = tmp_path / "tf"
    shutil.copytree(EXAMPLES / "tensorflow-config", root)
    spec = (root / "job.yaml").read_text().replace("../../.corral-demo/outputs", str(tmp_path / "outputs"))
    (root / "job.yaml").write_text(
        spec.replace("cluster: demo", f"cluster: {CLUSTER}").replace("node_count: 4", "node_count: 2")
    )
    job = c.wait_job(c.create_job(root / "job.yaml").name, timeout=120)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="stderr"))
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("configs/*.json"))]
    hosts = {address.rsplit(":", 1)[0] for kind in configs[0]["cluster"].values() for address in kind}
    assert hosts == {n.ip for n in c.list_nodes(CLUSTER)}


def test_a_killed_server_finds_the_job_again_and_its_logs_go_on(srv: ServerHandle) -> None:
    c = srv.client(experiment="crash")
    command = "for i in 1 2 3 4 5 6 7 8; do echo line-$i; sleep 0.4; done; exit 7"
    job = c.create_job({"cluster": CLUSTER, "node_count": 2, "custom": {"command": command}}, name="survivor")
    until(lambda: "line-2" in c.job_logs(job.name, rank=1), timeout=60)
    srv.kill()
    time.sleep(1.5)  # the job goes on without a server
    srv.start()
    c = srv.client(experiment="crash")
    ended = c.wait_job(job.name, timeout=60)
    assert ended.state == "failed" and ended.error is not None and "exited with code 7" in ended.error.message, (
        ended.error
    )
    expected = "".join(f"line-{i}\n" for i in range(1, 9))
    assert [c.job_logs(job.name, rank=rank) for rank in range(2)] == [expected, expected]


@pytest.mark.slow
@torch_only
def test_pytorch_ddp_example_trains_across_two_hosts(srv: ServerHandle, tmp_path: Path) -> None:
    c = srv.client(experiment="ddp")
    root = tmp_path / "ddp"
    shutil.copytree(EXAMPLES / "pytorch-ddp", root)
    spec = (root / "job.yaml").read_text().replace("../../.corral-demo/outputs", str(tmp_path / "outputs"))
    (root / "job.yaml").write_text(spec.replace("cluster: demo", f"cluster: {CLUSTER}"))
    job = c.wait_job(c.create_job(root / "job.yaml").name, timeout=300)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, rank=0, stream="stderr"))
    logs = [c.job_logs(job.name, rank=rank) for rank in range(4)]
    digests = {re.search(r"params_sha256=(\w+)", text).group(1) for text in logs}  # type: ignore[union-attr]
    assert len(digests) == 1, "DDP keeps every rank's parameters identical"
    ips = {n.name: n.ip for n in c.list_nodes(CLUSTER)}
    assert len({ips[name] for name in job.nodes}) == 2, "the two nodes are two hosts"
    assert f"rendezvous at {ips[job.nodes[0]]}:" in logs[0]  # node 0's address, reached from the other host
    metrics = json.loads(next((tmp_path / "outputs").rglob("metrics.json")).read_text())
    assert metrics["accuracy"] > 0.9 and metrics["world_size"] == 4


@mpi_only
def test_mpi_ranks_run_on_both_hosts_and_the_example_sums(srv: ServerHandle, tmp_path: Path) -> None:
    c = srv.client(experiment="mpi")
    spec = {"cluster": CLUSTER, "node_count": 2, "mpi": {"command": "hostname -I", "processes": 4}}
    job = c.wait_job(c.create_job(spec, name="hosts").name, timeout=120)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="mpirun"))
    ips = {n.name: n.ip for n in c.list_nodes(CLUSTER)}
    # mpirun fills node 0's slots first: ranks 0 and 1 there, 2 and 3 on the other host (started through its agent)
    seen = [host_ip(c.job_logs(job.name, rank=rank)) for rank in range(4)]
    assert seen == [ips[job.nodes[0]]] * 2 + [ips[job.nodes[1]]] * 2
    root = tmp_path / "mpi"
    shutil.copytree(EXAMPLES / "mpi-allreduce", root)
    text = (root / "job.yaml").read_text().replace("../../.corral-demo/outputs", str(tmp_path / "outputs"))
    (root / "job.yaml").write_text(text.replace("cluster: demo", f"cluster: {CLUSTER}"))
    job = c.wait_job(c.create_job(root / "job.yaml").name, timeout=120)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="mpirun"))
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("result/rank-*.json"))]
    assert sorted(r["rank"] for r in records) == [0, 1, 2, 3] and all(r["sum"] == 10 for r in records)


@mpi_only
def test_a_failing_mpi_rank_on_the_second_host_fails_the_job_and_nothing_is_left(srv: ServerHandle) -> None:
    c = srv.client(experiment="mpi-fail")
    spec = {
        "cluster": CLUSTER,
        "node_count": 2,
        "mpi": {"command": '[ "$OMPI_COMM_WORLD_RANK" = 2 ] && exit 4; sleep 300', "processes": 4},
        "limits": {"termination_grace": "5s"},
    }
    job = c.wait_job(c.create_job(spec).name, timeout=90)
    assert job.state == "failed" and job.error is not None
    assert "rank 2 exited with code 4 (the first to fail)" in job.error.message, job.error
    until(lambda: run_processes(f"{job.uid}.1") == [], timeout=15)  # on either host


def run_processes(run: str) -> list[int]:
    """Processes of this machine (every host's) that belong to the attempt ``run`` (``<job uid>.<attempt>``)."""
    found, wanted = [], f"CORRAL_RUN_ID={run}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("how", ["ray-killed", "link-down"])
def test_a_lost_host_loses_its_node_its_processes_end_and_the_job_runs_again_elsewhere(
    srv: ServerHandle, ray_hosts: RayHosts, how: str
) -> None:
    c = srv.client(experiment="loss")
    c.resize_cluster(CLUSTER, 3)
    until(lambda: [n.state for n in c.list_nodes(CLUSTER)] == ["idle"] * 3, timeout=60)
    # The first attempt writes a heartbeat into the job's shared folder for 30 s (the stale one must stop writing
    # once fenced); the second, 1 s.
    beat = 'echo "$CORRAL_NODE_RANK $CORRAL_ATTEMPT" >> $CORRAL_SHARED_JOB_TEMP/beats; sleep 0.2'
    command = f"for i in $(seq 1 $([ $CORRAL_ATTEMPT = 1 ] && echo 150 || echo 5)); do {beat}; done"
    job = c.create_job({"cluster": CLUSTER, "node_count": 2, "custom": {"command": command}}, name=f"lossy-{how}")
    until(lambda: c.get_job(job.name).state == "running" and "1 1" in _beats(c, job.name), timeout=60)
    running = c.get_job(job.name)
    ips = {n.name: n.ip for n in c.list_nodes(CLUSTER)}
    victim = ips[running.nodes[1]]
    host = ray_hosts.ips.index(victim) + 1
    lost_at = time.monotonic()
    if how == "ray-killed":
        ray_hosts.kill_ray(host)
    else:
        ray_hosts.cut(host)
    try:
        until(lambda: len(c.get_job(job.name).attempts) >= 2, timeout=60)
        print(f"{how}: the job requeued after {time.monotonic() - lost_at:.1f} s")
        until(lambda: run_processes(f"{job.uid}.1") == [], timeout=30)  # the fence ended the stale attempt
        print(f"{how}: the stale attempt's processes gone after {time.monotonic() - lost_at:.1f} s")
        fenced = len(_beats(c, job.name).splitlines())
        ended = c.wait_job(job.name, timeout=120)
        assert ended.state == "succeeded", ended.error
        first = ended.attempts[0]
        assert first.reason == "NodeLost" and victim not in {ips[n] for n in ended.nodes}
        beats = _beats(c, job.name).splitlines()
        assert not [b for b in beats[fenced:] if b.endswith(" 1")], "the stale attempt wrote after it was fenced"
        # Its node went with its machine; the cluster waits for one to take its place.
        until(lambda: victim not in {n.ip for n in c.list_nodes(CLUSTER)}, timeout=15)
        assert c.get_cluster(CLUSTER).allocation_state == "resizing"
    finally:
        ray_hosts.restart(host)
    # The machine is back: a new node takes it (its setup runs again on its new, empty disk).
    until(lambda: sorted(n.ip for n in c.list_nodes(CLUSTER) if n.state == "idle") == sorted(ray_hosts.ips), 60)
    back = next(n for n in c.list_nodes(CLUSTER) if n.ip == victim)
    assert host_ip(c.node_logs(CLUSTER, back.name)) == victim
    c.resize_cluster(CLUSTER, 2)
    until(lambda: len(c.list_nodes(CLUSTER)) == 2, timeout=60)


def _beats(c: Client, name: str) -> str:
    job = c.get_job(name)
    beats = Path(job.job_dir, "shared", "beats")
    return beats.read_text() if beats.exists() else ""


def requested_machines() -> list[dict[str, float]]:
    """What Corral last asked of Ray's autoscaler (the request it keeps in the cluster's key-value store)."""
    import ray
    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    stored = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    assert ray.is_initialized() and stored is not None
    return list(json.loads(stored))


def test_an_automatic_cluster_grows_from_zero_for_a_job_and_back_asking_ray_for_its_machines(
    srv: ServerHandle, ray_hosts: RayHosts
) -> None:
    ray_driver(ray_hosts)
    c = srv.client(experiment="auto")
    c.resize_cluster(CLUSTER, 0)  # its machines are free for the automatic cluster
    until(lambda: c.list_nodes(CLUSTER) == [], timeout=60)
    until(lambda: reservations() == {}, timeout=10)  # and Ray sees them let go
    auto = {"name": "auto", "backend": "ray", "scale": {"min_nodes": 0, "max_nodes": 2, "idle_timeout": "2s"}}
    try:
        c.create_cluster(auto)
        until(lambda: requested_machines() == [], timeout=10)
        job = c.create_job({"cluster": "auto", "node_count": 2, "custom": {"command": "hostname -I"}}, name="grow")
        until(lambda: requested_machines() == [{"corral_node": 1}] * 2, timeout=10)
        until(lambda: len(reservations()) == 2, timeout=30)
        ended = c.wait_job(job.name, timeout=60)
        assert ended.state == "succeeded", ended.error
        assert len({host_ip(c.job_logs(job.name, rank=rank)) for rank in range(2)}) == 2
        until(lambda: c.list_nodes("auto") == [], timeout=30)  # idle past the timeout: back to 0
        until(lambda: requested_machines() == [], timeout=10)
    finally:
        c.delete_cluster("auto")
        c.resize_cluster(CLUSTER, 2)
        until(lambda: [n.state for n in c.list_nodes(CLUSTER)] == ["idle", "idle"], timeout=60)


def test_inputs_come_from_and_outputs_go_to_a_bucket_on_every_host(
    srv: ServerHandle, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each host stages the input from the S3 server itself and uploads its outputs itself (nothing goes through
    the server's disk: the hosts' disks are their own)."""
    import hashlib

    store = start_s3_server(tmp_path_factory.mktemp("moto-ray"), host="198.18.0.1")  # the hosts reach the bridge
    try:
        c = srv.client(experiment="data")
        c.create_volume(store.volume("bucket", "ray-data"))
        data = tmp_path_factory.mktemp("set")
        (data / "x.bin").write_bytes(bytes(range(256)) * 1000)
        c.upload_to_volume("bucket", data, "in")
        command = "sha256sum $CORRAL_INPUT_DATA/x.bin > $CORRAL_OUTPUT_OUT/sum-$CORRAL_NODE_RANK.txt; hostname -I"
        spec = {
            "cluster": CLUSTER, "node_count": 2, "custom": {"command": command},
            "inputs": [{"id": "DATA", "path": "vol://bucket/in"}], "outputs": [{"id": "OUT", "path": "vol://bucket/out"}],
        }  # fmt: skip
        job = c.wait_job(c.create_job(spec).name, timeout=120)
        assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="prepare"))
        assert len({host_ip(c.job_logs(job.name, rank=rank)) for rank in range(2)}) == 2
        for node in range(2):
            assert "input DATA: 1 file, 256000 bytes" in c.job_logs(job.name, stream="prepare", rank=node)
            assert "output OUT: 1 file" in c.job_logs(job.name, stream="upload", rank=node)
        digest = hashlib.sha256((data / "x.bin").read_bytes()).hexdigest()
        got = c.download(job.name, output="OUT", destination=tmp_path_factory.mktemp("out"))
        assert sorted(p.name for p in got) == ["sum-0.txt", "sum-1.txt"]
        assert all(p.read_text().split()[0] == digest for p in got)
    finally:
        store.stop()


def test_an_environment_is_built_on_every_host(srv: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each host builds the job's environment with uv on its own disk (the wheelhouse is a folder every host sees)."""
    from tests.integration.test_environments import make_wheel

    wheels = tmp_path_factory.mktemp("ray-wheels")
    wheels.chmod(0o755)
    make_wheel(wheels, "2.0")
    environment = {"packages": ["corraltestpkg==2.0"], "find_links": [str(wheels)], "no_index": True}
    code = "import corraltestpkg, sys; print(corraltestpkg.__version__, sys.prefix)"
    spec = {"cluster": CLUSTER, "node_count": 2, "environment": environment,
            "custom": {"command": f'python3 -c "{code}"; hostname -I'}}  # fmt: skip
    c = srv.client(experiment="envs")
    job = c.wait_job(c.create_job(spec).name, timeout=120)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="prepare"))
    outputs = [c.job_logs(job.name, rank=rank) for rank in range(2)]
    assert all(out.startswith("2.0 ") and "/.corral/env" in out for out in outputs), outputs
    assert len({host_ip(out) for out in outputs}) == 2
    assert all("built in" in c.job_logs(job.name, stream="environment", rank=n) for n in range(2))  # each its disk
