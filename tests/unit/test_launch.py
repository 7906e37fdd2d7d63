from __future__ import annotations

from corral.core.spec_parsing import parse_spec
from corral.core.specs import JobSpec
from corral.launch.layout import rank_exit
from corral.launch.plan import JobContext, NodeAssignment
from corral.launch.planner import plan_launch


def context(**spec: object) -> JobContext:
    data = {"cluster": "local", "custom": {"command": "python train.py $LR"}, **spec}
    return JobContext(
        workspace="ws",
        experiment="exp",
        job_name="j1",
        job_uid="abc123",
        attempt=2,
        job_dir="/jobs/ws/exp/j1/abc123",
        spec=parse_spec(JobSpec, data),
        secrets={"TOKEN": "s3cr3t"},
    )


NODES = [
    NodeAssignment(node_id=7, name="node-0", ip="10.0.0.1", root="/nodes/n0", gpus=(0, 1)),
    NodeAssignment(node_id=8, name="node-1", ip="10.0.0.2", root="/nodes/n1", gpus=(2, 3)),
]


def test_custom_plan_runs_the_command_once_per_node() -> None:
    plan = plan_launch(context(), NODES)
    assert [n.rank for n in plan.nodes] == [0, 1]
    assert all(len(n.processes) == 1 for n in plan.nodes)
    assert plan.nodes[1].processes[0].command == "python train.py $LR"
    assert plan.nodes[1].processes[0].stdout == "/jobs/ws/exp/j1/abc123/stdouterr/attempt-2/stdout-1.txt"
    assert rank_exit(plan.attempt_dir, 1) == "/jobs/ws/exp/j1/abc123/attempts/2/rank-1.exit"
    assert plan.checkpoint_dir == "/jobs/ws/exp/j1/abc123/checkpoints"
    assert plan.nodes[0].workdir == "/nodes/n0/jobs/abc123"
    assert plan.shared_dirs[0] == "/jobs/ws/exp/j1/abc123/attempts/2", "the attempt dir is made first"
    assert plan.secret_values == ("s3cr3t",)


def test_environment_of_design_section_5_with_twins() -> None:
    ctx = context(
        outputs=[{"id": "MODEL", "path": "/out", "suffix": "models"}],
        inputs=[{"id": "DATA", "path": "/data/mnist"}],
        env={"LR": "0.1"},
    )
    env = plan_launch(ctx, NODES).nodes[1].processes[0].env
    expected = {
        "JOB_NAME": "j1",
        "JOB_ID": "abc123",
        "EXPERIMENT": "exp",
        "WORKSPACE": "ws",
        "ATTEMPT": "2",
        "NODE_RANK": "1",
        "NUM_NODES": "2",
        "NODE_IPS": "10.0.0.1,10.0.0.2",
        "MASTER_ADDR": "10.0.0.1",
        "NUM_GPUS": "2",
        "OUTPUT_MODEL": "/out/ws/exp/j1/abc123/models",
        "INPUT_DATA": "/data/mnist",
        "JOB_TEMP": "/nodes/n1/jobs/abc123",
        "SHARED_JOB_TEMP": "/jobs/ws/exp/j1/abc123/shared",
        "STDOUTERR_DIR": "/jobs/ws/exp/j1/abc123/stdouterr/attempt-2",
        "CHECKPOINT_DIR": "/jobs/ws/exp/j1/abc123/checkpoints",
        "MOUNT_ROOT": "/nodes/n1/mounts",
    }
    for key, value in expected.items():
        assert env[f"CORRAL_{key}"] == value, key
        assert env[f"AZ_BATCHAI_{key}"] == value, key
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert env["LR"] == "0.1"
    assert env["TOKEN"] == "s3cr3t"


def test_gpus_variable_is_never_empty() -> None:
    nodes = [NodeAssignment(node_id=1, name="node-0", ip="127.0.0.1", root="/n")]
    env = plan_launch(context(), nodes).nodes[0].processes[0].env
    assert env["CORRAL_NUM_GPUS"] == "0"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_output_suffix_defaults_to_the_id() -> None:
    plan = plan_launch(context(outputs=[{"id": "LOGS", "path": "/o"}]), NODES)
    assert "/o/ws/exp/j1/abc123/LOGS" in plan.shared_dirs
