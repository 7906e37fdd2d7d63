"""Planners of the distributed toolkits: argv, environment, hostfile, TF_CONFIG (pure, plus a real /bin/sh)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from corral.core.spec_parsing import parse_spec
from corral.core.specs import JobSpec
from corral.launch.mpi import RANK_SHIM, hostfile, slots
from corral.launch.plan import JobContext, LaunchPlan, NodeAssignment, ProcessPlan
from corral.launch.planner import plan_launch, ports_needed, rank_count

JOB_DIR = "/jobs/ws/exp/j1/abc123"


def plan(
    toolkit: dict[str, object], nodes: list[NodeAssignment], ports: tuple[int, ...] = (), **extra: object
) -> LaunchPlan:
    spec = parse_spec(JobSpec, {"cluster": "c", "node_count": len(nodes), **toolkit, **extra})
    ctx = JobContext(
        workspace="ws",
        experiment="exp",
        job_name="j1",
        job_uid="abc123",
        attempt=1,
        job_dir=JOB_DIR,
        spec=spec,
        secrets={"API_KEY": "k"},
        ports=ports,
    )
    return plan_launch(ctx, nodes)


def virtual(count: int, gpus: int = 0, cpus: int = 4) -> list[NodeAssignment]:
    return [
        NodeAssignment(i, f"node-{i}", "127.0.0.1", f"/n/{i}", tuple(range(i * gpus, (i + 1) * gpus)), cpus)
        for i in range(count)
    ]


def machines(count: int, gpus: int = 0) -> list[NodeAssignment]:
    return [NodeAssignment(i, f"m{i}", f"10.0.0.{i + 1}", f"/n/{i}", tuple(range(gpus)), 8) for i in range(count)]


def expand(process: ProcessPlan, tmp_path: Path) -> str:
    """Run the process's command through /bin/sh with its environment, as the node would."""
    done = subprocess.run(
        ["/bin/sh", "-c", process.command], env=process.env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


# ---------------------------------------------------------------- pytorch


def test_pytorch_gives_every_process_what_torchrun_would() -> None:
    p = plan({"pytorch": {"script": "train.py", "args": "--epochs 3", "processes_per_node": 2}}, machines(2), (29600,))
    procs = p.processes
    assert [(x.rank, x.node_rank) for x in procs] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert {x.command for x in procs} == {"python3 train.py --epochs 3"}
    third = procs[2].env
    assert (third["RANK"], third["LOCAL_RANK"], third["NODE_RANK"], third["GROUP_RANK"]) == ("2", "0", "1", "1")
    assert (third["WORLD_SIZE"], third["LOCAL_WORLD_SIZE"]) == ("4", "2")
    assert (third["MASTER_ADDR"], third["MASTER_PORT"]) == ("10.0.0.1", "29600")
    assert third["CORRAL_PYTORCH_INIT_METHOD"] == third["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == "tcp://10.0.0.1:29600"
    assert third["AZ_BATCHAI_TASK_INDEX"] == "2" and third["CORRAL_NODE_RANK"] == "1"
    assert third["CORRAL_PYTORCH_BACKEND"] == "gloo" and third["OMP_NUM_THREADS"] == "4"
    assert [x.stdout.rsplit("/", 1)[1] for x in procs] == [f"stdout-{r}.txt" for r in range(4)]
    assert sorted(x.rank for x in procs) == [0, 1, 2, 3]  # one exit record each (rank_exit)


def test_pytorch_defaults_to_one_process_per_gpu_and_nccl() -> None:
    p = plan({"pytorch": {"script": "t.py"}}, machines(2, gpus=4), (29500,))
    assert len(p.processes) == 8 and p.processes[5].env["LOCAL_RANK"] == "1"
    assert p.processes[5].env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert p.processes[0].env["CORRAL_PYTORCH_BACKEND"] == "nccl"
    cpu = plan({"pytorch": {"script": "t.py"}}, virtual(3), (29500,))
    assert len(cpu.processes) == 3, "one process per node without GPUs"


def test_user_env_overrides_node_values_but_never_a_process_identity() -> None:
    p = plan({"pytorch": {"script": "t.py"}}, virtual(2), (29500,), env={"OMP_NUM_THREADS": "8", "RANK": "9"})
    assert p.processes[1].env["OMP_NUM_THREADS"] == "8" and p.processes[1].env["RANK"] == "1"


def test_batchai_style_arguments_expand_on_the_node(tmp_path: Path) -> None:
    p = plan(
        {"pytorch": {"script": "$CORRAL_JOB_TEMP/train.py", "args": "--out $CORRAL_OUTPUT_MODEL --rank $RANK $LR",
                     "interpreter": "echo"}},
        virtual(2),
        (29500,),
        outputs=[{"id": "MODEL", "path": "/out"}],
        env={"LR": "0.5"},
    )  # fmt: skip
    assert expand(p.processes[1], tmp_path) == (
        "/n/1/jobs/abc123/train.py --out /out/ws/exp/j1/abc123/MODEL --rank 1 0.5"
    )


# ---------------------------------------------------------------- tensorflow


def test_tensorflow_config_has_one_chief_unique_addresses_and_indexes() -> None:
    ports = tuple(range(30000, 30004))
    p = plan(
        {"tensorflow": {"script": "t.py", "master_args": "--m", "worker_args": "--w", "ps_args": "--p"}},
        virtual(2),
        ports,
    )
    configs = [json.loads(x.env["TF_CONFIG"]) for x in sorted(p.processes, key=lambda x: x.rank)]
    cluster = configs[0]["cluster"]
    assert all(c["cluster"] == cluster for c in configs)
    assert len(cluster["chief"]) == 1 and len(cluster["worker"]) == 2 and len(cluster["ps"]) == 1
    addresses = [a for kind in cluster.values() for a in kind]
    assert len(set(addresses)) == len(addresses) == 4
    assert [c["task"] for c in configs] == [
        {"type": "chief", "index": 0},
        {"type": "worker", "index": 0},
        {"type": "worker", "index": 1},
        {"type": "ps", "index": 0},
    ]
    by_rank = {x.rank: x for x in p.processes}
    assert by_rank[0].command == "python3 t.py --m" and by_rank[3].command == "python3 t.py --p"
    assert by_rank[2].env["CORRAL_TASK_INDEX"] == by_rank[2].env["AZ_BATCHAI_TASK_INDEX"] == "1"
    assert by_rank[1].env["CORRAL_WORKER_HOSTS"] == ",".join(cluster["worker"])
    assert by_rank[1].env["AZ_BATCHAI_PS_HOSTS"] == cluster["ps"][0]
    assert [x.node_rank for x in sorted(p.processes, key=lambda x: x.rank)] == [0, 1, 0, 1], "round robin"


def test_tensorflow_single_node_is_not_distributed() -> None:
    spec = parse_spec(JobSpec, {"cluster": "c", "tensorflow": {"script": "t.py"}})
    assert ports_needed(spec, 0) == 1 and rank_count(spec, 0) == 1
    p = plan({"tensorflow": {"script": "t.py"}}, virtual(1), (30000,))
    assert json.loads(p.processes[0].env["TF_CONFIG"])["cluster"] == {"chief": ["127.0.0.1:30000"]}


# ---------------------------------------------------------------- mpi family


def test_hostfile_merges_virtual_nodes_into_one_line() -> None:
    assert hostfile(virtual(2), 4) == "localhost slots=4\n"
    assert hostfile(machines(3), 4) == "10.0.0.1 slots=2\n10.0.0.2 slots=1\n10.0.0.3 slots=1\n"
    assert slots(2, 3) == [1, 1, 0] and hostfile(machines(3), 2).count("\n") == 2


def test_mpi_runs_one_mpirun_forwarding_every_variable_by_name() -> None:
    p = plan({"mpi": {"command": "python3 allreduce.py $LR", "processes": 4}}, virtual(2), env={"LR": "0.1"})
    assert [len(n.processes) for n in p.nodes] == [1, 0], "mpirun on the first node starts every rank"
    launcher = p.processes[0]
    argv = shlex.split(launcher.command)
    assert argv[:8] == ["mpirun", "--hostfile", f"{JOB_DIR}/attempts/1/hostfile", "-np", "4", "--bind-to", "none", "-x"]
    forwarded = {argv[i + 1] for i, a in enumerate(argv) if a == "-x"}
    assert {
        "CORRAL_JOB_ID",
        "AZ_BATCHAI_JOB_ID",
        "LR",
        "API_KEY",
        "PATH",
    } <= forwarded
    assert "k" not in argv, "secret values never appear on a command line"
    assert argv[-1] == "python3 allreduce.py $LR" and argv[-6:-3] == ["-c", RANK_SHIM, "corral-rank"]
    assert launcher.env["OMPI_ALLOW_RUN_AS_ROOT"] == "1" and launcher.sweep_session
    assert launcher.env["CORRAL_MPI_HOST_FILE"] == f"{JOB_DIR}/attempts/1/hostfile"
    assert launcher.stdout.endswith("/mpirun.txt")
    assert p.files == ((f"{JOB_DIR}/attempts/1/hostfile", "localhost slots=4\n"),)


def test_mpi_family_commands_and_process_counts() -> None:
    nodes = virtual(2, gpus=2)
    hvd = plan({"horovod": {"script": "train.py", "args": "--lr 1"}}, nodes)
    assert shlex.split(hvd.processes[0].command)[-1] == "python3 train.py --lr 1"
    assert "-np 4" in hvd.processes[0].command, "one rank per GPU"
    assert hvd.processes[0].env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3", "virtual nodes' ranks see all the job's GPUs"
    cntk = plan({"cntk": {"language": "brainscript", "config_file": "c.cntk", "args": "x=1"}}, virtual(2))
    assert shlex.split(cntk.processes[0].command)[-1] == "cntk configFile=c.cntk x=1"
    torch_mpi = plan({"pytorch": {"script": "t.py", "backend": "mpi", "processes_per_node": 2}}, virtual(2))
    assert "-np 4" in torch_mpi.processes[0].command
    spec = parse_spec(JobSpec, {"cluster": "c", "node_count": 3, "chainer": {"script": "t.py"}})
    assert rank_count(spec, 0) == 3 and rank_count(spec, 2) == 6 and ports_needed(spec, 2) == 0


def test_rank_shim_writes_per_rank_logs_and_the_first_failure(tmp_path: Path) -> None:
    for rank, code in ((2, 3), (1, 4)):
        env = {"OMPI_COMM_WORLD_RANK": str(rank), "WHO": "me", "PATH": "/usr/bin:/bin"}
        cmd = f"echo $WHO $OMPI_COMM_WORLD_RANK; echo oops >&2; exit {code}"
        done = subprocess.run(["/bin/sh", "-c", RANK_SHIM, "corral-rank", str(tmp_path), str(tmp_path), cmd], env=env)
        assert done.returncode == code
    assert (tmp_path / "stdout-2.txt").read_text() == "me 2\n"
    assert (tmp_path / "stderr-1.txt").read_text() == "oops\n"
    assert (tmp_path / "first-failure").read_text() == "2 3\n", "the first failure is kept"


# ---------------------------------------------------------------- caffe2 and counts


def test_caffe2_shards_and_a_file_store_per_attempt() -> None:
    p = plan({"caffe2": {"script": "t.py"}}, virtual(2))
    env = p.processes[1].env
    assert (env["CORRAL_SHARD_ID"], env["CORRAL_NUM_SHARDS"]) == ("1", "2")
    assert env["CORRAL_CAFFE2_FILE_STORE"] == f"{JOB_DIR}/shared/caffe2-attempt-1"
    assert env["CORRAL_CAFFE2_FILE_STORE"] in p.shared_dirs


@pytest.mark.parametrize(
    ("toolkit", "gpus", "ranks", "ports"),
    [
        ({"custom": {"command": "x"}}, 0, 2, 0),
        ({"pytorch": {"script": "t.py", "processes_per_node": 3}}, 0, 6, 1),
        ({"pytorch": {"script": "t.py", "backend": "mpi"}}, 0, 2, 0),
        ({"tensorflow": {"script": "t.py", "worker_count": 3, "ps_count": 2}}, 0, 6, 6),
        ({"mpi": {"command": "x", "processes": 5}}, 0, 5, 0),
    ],
)
def test_ranks_and_ports_of_each_toolkit(toolkit: dict[str, object], gpus: int, ranks: int, ports: int) -> None:
    spec = parse_spec(JobSpec, {"cluster": "c", "node_count": 2, **toolkit})
    assert (rank_count(spec, gpus), ports_needed(spec, gpus)) == (ranks, ports)
