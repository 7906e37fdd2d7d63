"""Jobs running for real on the local backend, through a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from corral.client.client import Client
from corral.core.errors import InvalidRequest
from tests.conftest import ServerHandle


@pytest.fixture
def client(server: ServerHandle) -> Client:
    return server.client(experiment=f"e{uuid.uuid4().hex[:8]}")


def run(client: Client, command: str, **spec: object) -> object:
    job = client.create_job({"cluster": "local", "custom": {"command": command}, **spec})
    return client.wait_job(job.name, timeout=60)


def process_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_environment_env_and_secrets(client: Client, server: ServerHandle, tmp_path: Path) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    command = (
        "python3 -c \"import json, os; json.dump(dict(os.environ), open(os.environ['CORRAL_OUTPUT_ENV'] + "
        "'/env.json', 'w'))\"; echo token is $API_KEY"
    )
    job = run(
        client,
        command,
        node_count=2,
        env={"LR": "0.1"},
        secrets={"API_KEY": secret},
        outputs=[{"id": "ENV", "path": str(tmp_path)}],
    )
    assert job.state == "succeeded", job.error  # type: ignore[attr-defined]
    out_dir = tmp_path / "default" / client.experiment / job.name / job.uid / "ENV"  # type: ignore[attr-defined]
    env = json.loads((out_dir / "env.json").read_text())
    assert env["LR"] == "0.1" and env["API_KEY"] == secret
    assert env["CORRAL_JOB_NAME"] == job.name == env["AZ_BATCHAI_JOB_NAME"]  # type: ignore[attr-defined]
    assert env["CORRAL_EXPERIMENT"] == client.experiment
    assert env["CORRAL_WORKSPACE"] == "default"
    assert env["CORRAL_NUM_NODES"] == "2" and env["CORRAL_NODE_IPS"] == "127.0.0.1,127.0.0.1"
    assert env["CORRAL_MASTER_ADDR"] == "127.0.0.1" and env["CORRAL_NUM_GPUS"] == "0"
    assert env["CORRAL_OUTPUT_ENV"] == str(out_dir)
    for key in ("CORRAL_JOB_TEMP", "CORRAL_SHARED_JOB_TEMP", "CORRAL_CHECKPOINT_DIR", "CORRAL_STDOUTERR_DIR"):
        assert Path(env[key]).is_dir(), key
    # No API response carries the secret's value; logs show it masked.
    base = f"/workspaces/default/experiments/{client.experiment}/jobs"
    headers = {"Authorization": f"Bearer {server.token}"}
    for path in ("", f"/{job.name}", f"/{job.name}/events", f"/{job.name}/logs"):  # type: ignore[attr-defined]
        body = httpx.get(f"{server.url}/api/v1{base}{path}", headers=headers).text
        assert secret not in body
    assert client.job_logs(job.name) == "token is ***\n"  # type: ignore[attr-defined]
    assert client.get_job(job.name).spec.secrets == {"API_KEY": "***"}  # type: ignore[attr-defined]


def test_exit_code_and_failure(client: Client) -> None:
    job = run(client, "echo failing >&2; exit 7")
    assert job.state == "failed" and job.exit_code == 7  # type: ignore[attr-defined]
    assert job.error.code == "JobFailed" and "exited with code 7" in job.error.message  # type: ignore[attr-defined]
    assert client.job_logs(job.name, stream="stderr") == "failing\n"  # type: ignore[attr-defined]
    assert [e.to_state for e in client.job_events(job.name)] == ["queued", "running", "failed"]  # type: ignore[attr-defined]


def test_one_failed_node_ends_the_whole_job(client: Client) -> None:
    started = time.monotonic()
    job = run(client, 'if [ "$CORRAL_NODE_RANK" = 1 ]; then exit 5; fi; sleep 120', node_count=2)
    assert time.monotonic() - started < 60
    assert job.state == "failed" and job.exit_code == 5  # type: ignore[attr-defined]
    assert job.error.message == "rank 1 on node 1 (node-1) exited with code 5"  # type: ignore[attr-defined]


def test_gang_placement_uses_distinct_nodes(client: Client) -> None:
    job = run(client, "true", node_count=3)
    assert job.state == "succeeded"  # type: ignore[attr-defined]
    assert len(set(job.attempts[0].nodes)) == 3  # type: ignore[attr-defined]


def test_priority_order_then_fifo(client: Client, tmp_path: Path) -> None:
    cluster = f"solo{uuid.uuid4().hex[:6]}"
    client.create_cluster({"name": cluster, "scale": {"nodes": 1}})
    gate = tmp_path / "gate"
    order = tmp_path / "order.txt"
    blocker = client.create_job(
        {"cluster": cluster, "custom": {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done"}}
    )
    names = [("low-1", "low"), ("normal-1", "normal"), ("high-1", "high"), ("normal-2", "normal"), ("high-2", "high")]
    for name, priority in names:
        client.create_job(
            {"name": name, "cluster": cluster, "priority": priority, "custom": {"command": f"echo {name} >> {order}"}}
        )
    gate.touch()
    client.wait_job(blocker.name, timeout=60)
    for name, _ in names:
        assert client.wait_job(name, timeout=60).state == "succeeded"
    assert order.read_text().split() == ["high-1", "high-2", "normal-1", "normal-2", "low-1"]


def test_terminate_kills_the_whole_group(client: Client, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    job = client.create_job(
        {
            "cluster": "local",
            "custom": {"command": f"sleep 300 & echo $! > {pid_file}; trap '' TERM; sleep 300"},
            "limits": {"termination_grace": "1s"},
        }
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    background = int(pid_file.read_text())
    assert client.terminate_job(job.name).state == "terminating"
    ended = client.wait_job(job.name, timeout=60)
    assert ended.state == "terminated" and ended.error.code == "Terminated"  # type: ignore[union-attr]
    assert process_gone(background), "the job's background process outlived it"
    assert job.name not in [n.job for n in client.list_nodes("local")], "the job's node was released"
    # SIGKILL after the grace period killed the wrapper before it recorded a code: the shell's 137, not a lost
    # node (a lost node is marked unusable, and no job would run on it again)
    assert ended.attempts[-1].exit_code == 137
    assert {n.state for n in client.list_nodes("local")} == {"idle"}


def test_terminate_a_queued_job(client: Client) -> None:
    job = client.create_job({"cluster": "local", "node_count": 4, "custom": {"command": "sleep 300"}})
    waiting = client.create_job({"cluster": "local", "custom": {"command": "true"}})
    assert client.get_job(waiting.name).state == "queued"
    assert client.terminate_job(waiting.name).state == "terminated"
    client.terminate_job(job.name)
    assert client.wait_job(job.name, timeout=60).state == "terminated"
    assert client.get_job(waiting.name).started_at is None


def test_wall_clock_is_enforced(client: Client) -> None:
    job = run(client, "sleep 60", limits={"max_wall_clock": "1s", "termination_grace": "1s"})
    assert job.state == "failed" and job.error.code == "WallClockExceeded"  # type: ignore[attr-defined]


def test_prepare_runs_first_and_its_failure_fails_the_job(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "prepared"
    ok = run(client, f"cat {marker}", prepare={"command": f"echo ready > {marker}"})
    assert ok.state == "succeeded" and client.job_logs(ok.name) == "ready\n"  # type: ignore[attr-defined]
    bad = run(client, "echo never", prepare={"command": "echo preparing; exit 2"})
    assert bad.state == "failed" and bad.error.code == "PrepareFailed"  # type: ignore[attr-defined]
    assert "exit code 2" in bad.error.message  # type: ignore[attr-defined]
    assert client.job_logs(bad.name, stream="prepare") == "preparing\n"  # type: ignore[attr-defined]
    assert client.job_logs(bad.name) == ""  # type: ignore[attr-defined]


def test_code_is_uploaded_and_unpacked_on_every_node(client: Client, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("import os; print(sorted(os.listdir('.')))\n")
    (project / "weights.bin").write_text("big")
    (project / ".corralignore").write_text("*.bin\n")
    spec = project / "job.yaml"
    spec.write_text("cluster: local\nnode_count: 2\ncode: .\ncustom: {command: python3 train.py}\n")
    job = client.create_job(spec)
    job = client.wait_job(job.name, timeout=60)
    assert job.state == "succeeded", job.error
    expected = "['.corralignore', 'job.yaml', 'train.py']\n"
    assert client.job_logs(job.name, rank=0) == expected
    assert client.job_logs(job.name, rank=1) == expected


def test_outputs_listing_download_and_traversal(client: Client, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    command = (
        'cd "$CORRAL_OUTPUT_MODEL" && mkdir -p sub && echo weights > model.txt && echo deep > sub/x.txt'
        f" && ln -s {outside} leak && for i in $(seq 1 150); do touch f$i; done"
    )
    job = run(client, command, outputs=[{"id": "MODEL", "path": str(tmp_path / "out")}])
    assert job.state == "succeeded", job.error  # type: ignore[attr-defined]
    name = job.name  # type: ignore[attr-defined]
    entries = list(client.list_files(name, output="MODEL"))
    paths = [e.path for e in entries]
    assert "model.txt" in paths and "sub" in paths and "leak" not in paths
    assert len(paths) == 152, "every page was read"
    assert [e.path for e in client.list_files(name, output="MODEL", path="sub")] == ["sub/x.txt"]
    assert {e.name for e in client.list_files(name)} == {"MODEL", "stdouterr"}
    saved = client.download_file(name, output="MODEL", path="model.txt", destination=tmp_path)
    assert saved.read_text() == "weights\n"
    for bad in ("../../../../../../etc/passwd", "/etc/passwd", "leak", "sub/../../x"):
        with pytest.raises(InvalidRequest):
            client.download_file(name, output="MODEL", path=bad, destination=tmp_path / "x")
    with pytest.raises(InvalidRequest, match="has no output 'NOPE'"):
        list(client.list_files(name, output="NOPE"))


def test_follow_streams_logs_until_the_end(client: Client) -> None:
    job = client.create_job(
        {"cluster": "local", "custom": {"command": "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo oops >&2"}}
    )
    events = list(client.follow_logs(job.name))
    assert [line for stream, line in events if stream == "stdout"] == ["line 1", "line 2", "line 3"]
    assert ("stderr", "oops") in events
    assert events[-1][0] == "end" and json.loads(events[-1][1])["state"] == "succeeded"


def test_no_zombie_children_after_jobs(client: Client, server: ServerHandle) -> None:
    """Every node process the server started has been reaped once its job ended."""
    jobs = [client.create_job({"cluster": "local", "custom": {"command": "sleep 0.1 & true"}}) for _ in range(6)]
    for job in jobs:
        assert client.wait_job(job.name, timeout=60).state == "succeeded"
    assert server.process is not None
    zombies = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == server.process.pid and fields[0] == "Z":
                zombies.append(int(entry))
    assert zombies == []
