"""Distributed toolkits end to end through a real server: PyTorch DDP, MPI, TensorFlow's TF_CONFIG.

Torch and mpirun jobs are real (gloo on the CPU, OpenMPI); tests skip when the
machine lacks them, and CI installs both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from corral.client.client import Client
from tests.conftest import ServerHandle, running_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# CI installs both (scripts/setup.sh --distributed): there a missing one fails the tests instead of skipping them.
IN_CI = os.environ.get("CI") == "true"
torch_only = pytest.mark.skipif(not _has("torch") and not IN_CI, reason="PyTorch is not installed")
mpi_only = pytest.mark.skipif(
    (shutil.which("mpirun") is None or not _has("mpi4py")) and not IN_CI,
    reason="OpenMPI's mpirun or mpi4py is not installed",
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server with the examples' cluster ``demo``, four one-cpu virtual nodes."""
    home = tmp_path_factory.mktemp("dist-home")
    cluster = {"name": "demo", "node": {"cpus": 1}, "scale": {"nodes": 4}, "environment": "server"}
    with running_server(home, "sqlite", cluster) as handle:
        yield handle


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of the examples whose outputs go under the test's own directory."""
    root = tmp_path / "examples"
    shutil.copytree(EXAMPLES, root)
    for job in root.glob("*/job.yaml"):
        job.write_text(job.read_text().replace("../../.corral-demo/outputs", str(tmp_path / "outputs")))
    return root


def all_nodes_idle(c: Client) -> bool:
    return all(n.state == "idle" and n.job is None for n in c.list_nodes("demo"))


def wait_until(predicate: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@torch_only
def test_pytorch_ddp_example_trains_with_identical_parameters_on_every_rank(srv: ServerHandle, examples: Path) -> None:
    c = srv.client(experiment="ddp")
    job = c.wait_job(c.create_job(examples / "pytorch-ddp" / "job.yaml").name, timeout=300)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, rank=0, stream="stderr"))
    assert job.rank_count == 4
    logs = [c.job_logs(job.name, rank=rank) for rank in range(4)]
    digests = {re.search(r"params_sha256=(\w+)", text).group(1) for text in logs}  # type: ignore[union-attr]
    assert len(digests) == 1, "DDP keeps every rank's parameters identical"
    assert "epoch 10/10" in logs[0] and "4 processes" in logs[0]
    metrics = json.loads(
        c.download_file(job.name, output="MODEL", path="metrics.json", destination=examples).read_text()
    )
    assert metrics["losses"][-1] < metrics["losses"][0] / 3, metrics["losses"]
    assert metrics["accuracy"] > 0.9 and metrics["world_size"] == 4
    assert {e.path for e in c.list_files(job.name, output="MODEL")} == {"model.pt", "metrics.json"}


@pytest.mark.slow
@torch_only
def test_two_ddp_jobs_at_once_do_not_collide_on_ports(srv: ServerHandle, examples: Path) -> None:
    c = srv.client(experiment="ddp-pair")
    spec = examples / "pytorch-ddp" / "job.yaml"
    jobs = [c.create_job(spec, name=f"pair-{i}", experiment="ddp-pair") for i in range(2)]
    ended = [c.wait_job(j.name, timeout=300) for j in jobs]
    assert [j.state for j in ended] == ["succeeded", "succeeded"], [j.error for j in ended]
    a, b = ended
    assert a.started_at and b.started_at and a.ended_at and b.ended_at
    assert max(a.started_at, b.started_at) < min(a.ended_at, b.ended_at), "the two jobs ran at the same time"
    assert set(a.nodes).isdisjoint(b.nodes)
    rendezvous = {re.search(r"rendezvous at (\S+),", c.job_logs(j.name)).group(1) for j in ended}  # type: ignore[union-attr]
    assert len(rendezvous) == 2, rendezvous


@pytest.mark.slow
@torch_only
def test_a_killed_ddp_rank_fails_the_job_and_frees_every_node(srv: ServerHandle, tmp_path: Path) -> None:
    script = tmp_path / "die.py"
    script.write_text(
        "import os, signal, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.ones(1); dist.all_reduce(t); print('first allreduce', t.item(), flush=True)\n"
        "if dist.get_rank() == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "dist.all_reduce(t)  # the others wait here on a dead peer until Corral ends them\n"
        "print('never', flush=True)\n"
    )
    c = srv.client(experiment="ddp-kill")
    spec = {
        "cluster": "demo",
        "node_count": 2,
        "pytorch": {"script": str(script), "processes_per_node": 2},
        "limits": {"termination_grace": "5s"},
    }
    started = time.monotonic()
    job = c.wait_job(c.create_job(spec).name, timeout=120)
    assert time.monotonic() - started < 90, "no hang on the dead peer"
    assert job.state == "failed" and job.exit_code == 137
    assert job.error is not None and job.error.message.startswith("rank 3 on node 1"), job.error
    assert "first allreduce 4.0" in c.job_logs(job.name, rank=0)
    assert wait_until(lambda: all_nodes_idle(c))


def test_failed_rank_ends_the_other_processes_at_once(srv: ServerHandle) -> None:
    """A pytorch-toolkit job without torch: rank 2 fails, ranks 0, 1, 3 would sleep for minutes."""
    c = srv.client(experiment="fail-fast")
    # Each rank prints, then marks it in the shared temp; rank 2 fails once all have printed (else a slow
    # interpreter start under load could be ended before its print, and the logs below would race).
    code = (
        "import os, sys, time, pathlib; r = int(os.environ['RANK']); print('rank', r, flush=True); "
        "d = pathlib.Path(os.environ['CORRAL_SHARED_JOB_TEMP']); d.mkdir(parents=True, exist_ok=True); "
        "(d / str(r)).touch(); "
        "r == 2 and [time.sleep(0.05) for _ in range(600) if len(list(d.iterdir())) < 4]; "
        "r == 2 and sys.exit(3); time.sleep(300)"
    )
    spec = {
        "cluster": "demo",
        "node_count": 2,
        "pytorch": {"script": "-c", "args": json.dumps(code), "processes_per_node": 2},
    }
    started = time.monotonic()
    job = c.wait_job(c.create_job(spec).name, timeout=60)
    assert time.monotonic() - started < 30
    assert job.state == "failed" and job.exit_code == 3
    assert job.error is not None and job.error.message == "rank 2 on node 1 (node-1) exited with code 3"
    assert [c.job_logs(job.name, rank=r) for r in range(4)] == [f"rank {r}\n" for r in range(4)]
    assert wait_until(lambda: all_nodes_idle(c))


def test_prepare_runs_on_every_node_before_any_process(srv: ServerHandle, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = {
        "cluster": "demo",
        "node_count": 2,
        # Node 1 prepares slowly; a process on node 0 that started before it finished would not see its mark.
        "prepare": {"command": f'[ "$CORRAL_NODE_RANK" = 1 ] && sleep 1; touch {marks}/$CORRAL_NODE_RANK'},
        "pytorch": {"script": str(marks), "interpreter": "ls", "processes_per_node": 2},
    }
    c = srv.client(experiment="prepare")
    job = c.wait_job(c.create_job(spec).name, timeout=60)
    assert job.state == "succeeded", job.error
    assert [c.job_logs(job.name, rank=r) for r in range(4)] == ["0\n1\n"] * 4
    assert c.job_logs(job.name, rank=1, stream="prepare") == ""


def test_tensorflow_example_gives_consistent_configs(srv: ServerHandle, examples: Path, tmp_path: Path) -> None:
    c = srv.client(experiment="tensorflow")
    job = c.wait_job(c.create_job(examples / "tensorflow-config" / "job.yaml").name, timeout=120)
    assert job.state == "succeeded", job.error
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("configs/*.json"))]
    assert len(configs) == 4 == job.rank_count
    cluster = configs[0]["cluster"]
    assert all(cfg["cluster"] == cluster for cfg in configs)
    assert len(cluster["chief"]) == 1 and len(cluster["worker"]) == 2 and len(cluster["ps"]) == 1
    addresses = [a for kind in cluster.values() for a in kind]
    assert len(set(addresses)) == len(addresses), "no two tasks share a host:port"
    tasks = sorted((cfg["task"]["type"], cfg["task"]["index"]) for cfg in configs)
    assert tasks == [("chief", 0), ("ps", 0), ("worker", 0), ("worker", 1)]
    assert "chief 0: TF_CONFIG" in c.job_logs(job.name, rank=0)


@mpi_only
def test_mpi_example_sums_and_every_rank_sees_corral_variables(
    srv: ServerHandle, examples: Path, tmp_path: Path
) -> None:
    c = srv.client(experiment="mpi")
    job = c.wait_job(c.create_job(examples / "mpi-allreduce" / "job.yaml").name, timeout=120)
    assert job.state == "succeeded", (job.error, c.list_files(job.name, output="stdouterr"))
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").rglob("result/rank-*.json"))]
    assert sorted(r["rank"] for r in records) == [0, 1, 2, 3]
    assert all(r["sum"] == r["expected"] == 10 for r in records)
    for record in records:
        env = record["environment"]
        assert env["CORRAL_OUTPUT_RESULT"].endswith("/result") and env["AZ_BATCHAI_OUTPUT_RESULT"]
        assert env["CORRAL_MPI_HOST_FILE"].endswith("/hostfile") and env["CORRAL_JOB_NAME"] == job.name
    for rank in range(4):
        assert f"rank {rank}/4" in c.job_logs(job.name, rank=rank)
    # The CLI reads any rank's log.
    cli = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "job", "logs", job.name, "-e", "mpi", "--rank", "3"],
        env=srv.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert cli.stdout.startswith("rank 3/4")


@mpi_only
def test_mpi_failed_rank_is_named_and_the_others_end(srv: ServerHandle) -> None:
    c = srv.client(experiment="mpi-fail")
    spec = {
        "cluster": "demo",
        "node_count": 2,
        "mpi": {"command": '[ "$OMPI_COMM_WORLD_RANK" = 2 ] && exit 4; sleep 300', "processes": 4},
        "limits": {"termination_grace": "5s"},
    }
    started = time.monotonic()
    job = c.wait_job(c.create_job(spec).name, timeout=90)
    assert time.monotonic() - started < 60
    assert job.state == "failed" and job.error is not None
    assert "rank 2 exited with code 4 (the first to fail)" in job.error.message, job.error
    assert wait_until(lambda: all_nodes_idle(c))
    leftovers = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "no rank left behind"


def test_caffe2_shards_meet_through_the_file_store(srv: ServerHandle, tmp_path: Path) -> None:
    script = tmp_path / "shard.py"
    script.write_text(
        "import os, pathlib, time\n"
        "store = pathlib.Path(os.environ['CORRAL_CAFFE2_FILE_STORE'])\n"
        "me, n = int(os.environ['CORRAL_SHARD_ID']), int(os.environ['CORRAL_NUM_SHARDS'])\n"
        "(store / f'shard-{me}').write_text(str(me))\n"
        "while len(list(store.glob('shard-*'))) < n: time.sleep(0.05)\n"
        "print(f'shard {me} of {n} met', sorted(p.name for p in store.glob('shard-*')), flush=True)\n"
    )
    c = srv.client(experiment="caffe2")
    job = c.wait_job(c.create_job({"cluster": "demo", "node_count": 2, "caffe2": {"script": str(script)}}).name)
    assert job.state == "succeeded", job.error
    assert c.job_logs(job.name, rank=1) == "shard 1 of 2 met ['shard-0', 'shard-1']\n"


TORCH_WHEELS = Path("/opt/wheels")  # where this project's machines keep the CPU build of torch (no CUDA download)


@pytest.mark.slow
@torch_only
def test_the_ddp_example_runs_in_an_environment_of_its_own(srv: ServerHandle, examples: Path) -> None:
    """The example's packages come from an environment uv builds on the nodes (torch from the local wheelhouse,
    scikit-learn and the rest from the package index), not from the server's."""
    wheels = sorted(TORCH_WHEELS.glob("torch-*+cpu-*.whl")) if TORCH_WHEELS.is_dir() else []
    if not wheels:
        pytest.skip("no CPU build of torch in /opt/wheels")
    version = wheels[-1].name.split("-")[1]
    spec = yaml.safe_load((examples / "pytorch-ddp" / "job.yaml").read_text())
    spec["code"] = str(examples / "pytorch-ddp")
    spec["pytorch"]["args"] = "--epochs 2"
    spec["environment"] = {"packages": [f"torch=={version}", "scikit-learn"], "find_links": [str(TORCH_WHEELS)]}
    c = srv.client(experiment="ddp")
    job = c.wait_job(c.create_job(spec).name, timeout=600)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="prepare"))
    # Both nodes are on this machine: one builds it, the other waits for it and finds it.
    built = [c.job_logs(job.name, stream="environment", rank=n) for n in range(2)]
    assert sum("built in" in log for log in built) == 1, built
    uid = c.get_job(job.name).uid
    link = next(srv.home.glob(f"nodes/*/*/*/jobs/{uid}/.corral/env"))
    assert next(link.resolve().glob("lib/python*/site-packages/torch/__init__.py"), None) is not None
    assert "epoch 2/2" in c.job_logs(job.name, rank=0)
