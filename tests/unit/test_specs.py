from __future__ import annotations

from pathlib import Path

import pytest

from corral.core.errors import InvalidSpec
from corral.core.spec_parsing import load_spec_file, parse_spec
from corral.core.specs import ClusterSpec, JobSpec
from corral.core.units import parse_duration, parse_size


def job(**fields: object) -> dict[str, object]:
    return {"cluster": "local", "custom": {"command": "true"}, **fields}


def test_minimal_job_gets_defaults() -> None:
    spec = parse_spec(JobSpec, job())
    assert spec.node_count == 1
    assert spec.priority == "normal"
    assert spec.toolkit == "custom"
    assert spec.limits.termination_grace == 30.0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (job(node_count=0), "node_count: must be >= 1, got 0"),
        (job(priority="urgent"), "priority: must be one of 'low', 'normal' or 'high', got 'urgent'"),
        (job(nodecount=2), "nodecount: unknown field"),
        ({"custom": {"command": "true"}}, "cluster: required"),
        (job(limits={"max_wall_clock": "soon"}), "limits.max_wall_clock: expected a duration"),
        (job(env={"1BAD": "x"}), "env.1BAD"),
        (job(outputs=[{"id": "M", "path": "/a"}, {"id": "M", "path": "/b"}]), "ids must be unique"),
        (job(inputs=[{"id": "D"}]), "inputs.0.path: required"),
        (job(custom={"command": ""}), "custom.command: must not be empty"),
    ],
)
def test_job_errors_name_the_field(data: dict[str, object], expected: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(JobSpec, data, source="job")
    assert expected in info.value.message
    assert info.value.details, "details carry each field path for API clients"


def test_exactly_one_toolkit() -> None:
    with pytest.raises(InvalidSpec, match="exactly one toolkit"):
        parse_spec(JobSpec, {"cluster": "local"})
    with pytest.raises(InvalidSpec, match="got custom, mpi"):
        parse_spec(JobSpec, job(mpi={"command": "x"}))


@pytest.mark.parametrize(
    ("toolkit", "expected"),
    [
        ({"pytorch": {}}, "pytorch.script: required"),
        ({"pytorch": {"script": "t.py", "backend": "tcp"}}, "pytorch.backend: must be one of 'gloo', 'nccl' or 'mpi'"),
        ({"pytorch": {"script": "t.py", "processes_per_node": 0}}, "pytorch.processes_per_node: must be >= 1"),
        ({"tensorflow": {"script": "t.py", "ps_count": -1}}, "tensorflow.ps_count: must be >= 0"),
        ({"mpi": {"command": "x", "process_count": 2}}, "mpi.process_count: unknown field"),
        ({"cntk": {"language": "brainscript", "script": "a.py"}}, "cntk: language brainscript needs config_file"),
        ({"horovod": {"script": "t.py", "processes": "many"}}, "horovod.processes: must be an integer"),
    ],
)
def test_toolkit_errors_name_the_field(toolkit: dict[str, object], expected: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(JobSpec, {"cluster": "local", **toolkit})
    assert expected in info.value.message


def test_toolkit_defaults() -> None:
    spec = parse_spec(JobSpec, {"cluster": "local", "pytorch": {"script": "train.py"}})
    assert spec.toolkit == "pytorch" and spec.pytorch is not None
    assert (spec.pytorch.interpreter, spec.pytorch.args, spec.pytorch.backend) == ("python3", "", None)


def test_env_and_secrets_may_not_overlap() -> None:
    with pytest.raises(InvalidSpec, match="env and secrets both set"):
        parse_spec(JobSpec, job(env={"A": "1"}, secrets={"A": "2"}))


def test_file_urls_become_paths() -> None:
    spec = parse_spec(JobSpec, job(outputs=[{"id": "M", "path": "file:///tmp/out"}]))
    assert spec.outputs[0].path == "/tmp/out"


def test_cluster_scale_modes() -> None:
    manual = parse_spec(ClusterSpec, {"name": "c", "scale": {"nodes": 2}})
    assert not manual.scale.is_auto
    auto = parse_spec(ClusterSpec, {"name": "c", "scale": {"min_nodes": 0, "max_nodes": 4, "idle_timeout": "10m"}})
    assert auto.scale.is_auto and auto.scale.idle_timeout == 600
    with pytest.raises(InvalidSpec, match="not both"):
        parse_spec(ClusterSpec, {"name": "c", "scale": {"nodes": 2, "max_nodes": 3}})
    with pytest.raises(InvalidSpec, match=r"node.memory: expected a size"):
        parse_spec(ClusterSpec, {"name": "c", "node": {"memory": "lots"}})
    with pytest.raises(InvalidSpec, match="name: must match"):
        parse_spec(ClusterSpec, {"name": "bad name"})


def test_sizes_and_durations() -> None:
    assert parse_size("16GiB") == 16 * 1024**3
    assert parse_size("512MB") == 512 * 1000**2
    assert parse_size(1024) == 1024
    assert parse_duration("90s") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    assert parse_duration("PT2H30M") == 9000
    assert parse_duration(5) == 5.0
    for bad in ("", "2 hours", "-1s", "P"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size("12 apples")


def test_load_spec_file_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("cluster: local\ncustom: {command: 'true'}\n")
    (tmp_path / "b.json").write_text('{"cluster": "local", "custom": {"command": "true"}}')
    (tmp_path / "c.yaml").write_text("- just\n- a list\n")
    (tmp_path / "d.yaml").write_text("cluster: [unclosed\n")
    assert load_spec_file(tmp_path / "a.yaml") == load_spec_file(tmp_path / "b.json")
    with pytest.raises(InvalidSpec, match="expected a mapping"):
        load_spec_file(tmp_path / "c.yaml")
    with pytest.raises(InvalidSpec, match="not valid YAML"):
        load_spec_file(tmp_path / "d.yaml")
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_spec_file(tmp_path / "missing.yaml")


def test_yaml_reads_booleans_as_yaml_1_2_does(tmp_path: Path) -> None:
    """``on`` is a key, not ``true``: the docs' own ``retry: {on: [...]}`` used to fail."""
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "cluster: c\ncustom: {command: 'true'}\nretry: {on: [node_failure]}\nenv: {A: yes, B: on, C: true}\n"
    )
    job = parse_spec(JobSpec, load_spec_file(spec), source="job")
    assert job.retry.on == ["node_failure"]
    assert job.env == {"A": "yes", "B": "on", "C": "true"}


def test_numbers_in_env_are_taken_as_the_text_they_read_as() -> None:
    job = parse_spec(JobSpec, {"cluster": "c", "custom": {"command": "x"}, "env": {"LR": 0.1, "N": 4, "D": False}})
    assert job.env == {"LR": "0.1", "N": "4", "D": "false"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"cluster": "c", "pytorch": {"script": "t.py", "procesess_per_node": 2}}, "did you mean 'processes_per_node'"),
        ({"cluster": "c", "custom": {"command": "x"}, "retry": {"max_atempts": 2}}, "did you mean 'max_attempts'"),
        (
            {"cluster": "c", "custom": {"command": "x"}, "outputs": [{"id": "A", "path": "/o", "sufix": "s"}]},
            "'suffix'",
        ),
        ({"cluster": "c", "custom": {"command": "x"}, "node_cont": 2}, "did you mean 'node_count'"),
    ],
)
def test_unknown_fields_say_what_was_meant(data: dict[str, object], expected: str) -> None:
    with pytest.raises(InvalidSpec, match=expected):
        parse_spec(JobSpec, data, source="job")
