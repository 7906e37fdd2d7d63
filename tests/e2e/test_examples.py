"""The examples run as the README says they do (marked slow: they train real models)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ServerHandle, until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_sklearn_digits_example_trains_on_two_nodes(server_factory: object, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    example = tmp_path / "sklearn-digits"
    shutil.copytree(EXAMPLES / "sklearn-digits", example)
    c = srv.client(experiment="digits")
    c.create_cluster(example / "cluster.yaml")
    job = c.wait_job(c.create_job(example / "job.yaml").name, timeout=300)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="stderr"))
    for rank in (0, 1):
        assert "test accuracy" in c.job_logs(job.name, rank=rank)
    files = {e.path for e in c.list_files(job.name, output="MODEL")}
    assert files == {"model-node0.pkl", "model-node1.pkl", "metrics-node0.json", "metrics-node1.json"}
    metrics = c.download_file(job.name, output="MODEL", path="metrics-node1.json", destination=tmp_path)
    assert json.loads(metrics.read_text())["accuracy"] > 0.9
    until(lambda: len(c.job_metrics(job.name)) == 4)  # val_acc and c of each node's rank
    reported = {(s.name, s.rank): s.last_value for s in c.job_metrics(job.name)}
    assert reported[("c", 0)] == 0.1 and reported[("c", 1)] == 1.0
    assert reported[("val_acc", 1)] == json.loads(metrics.read_text())["accuracy"]


@pytest.mark.slow
def test_volumes_example_reads_from_and_writes_to_a_volume(server_factory: object, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    example = tmp_path / "volumes"
    shutil.copytree(EXAMPLES / "volumes", example)
    lab = tmp_path / "lab"  # the example's /tmp/corral-lab, for this test alone
    lab.mkdir()
    spec = (example / "volume.yaml").read_text().replace("/tmp/corral-lab", str(lab))
    (example / "volume.yaml").write_text(spec)
    c = srv.client(experiment="volumes")
    c.create_cluster(EXAMPLES / "sklearn-digits" / "cluster.yaml")
    c.create_volume(example / "volume.yaml")
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    c.upload_to_volume("lab", example / "data", "digits")
    job = c.wait_job(c.create_job(example / "job.yaml").name, timeout=300)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="stderr"))
    assert "test accuracy" in c.job_logs(job.name)
    assert {e.name for e in c.list_files(job.name, output="MODEL")} == {"model.pkl", "metrics.json"}
    uid = c.get_job(job.name).uid
    metrics = lab / "models" / "default" / "volumes" / job.name / uid / "MODEL" / "metrics.json"
    assert json.loads(metrics.read_text())["accuracy"] > 0.9


@pytest.mark.slow
def test_sweep_example_tunes_the_digits_classifier(server_factory: object, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    example = tmp_path / "examples" / "sweep"
    shutil.copytree(EXAMPLES / "sweep", example)
    c = srv.client(experiment="digits-sweep")
    c.create_cluster(EXAMPLES / "sklearn-digits" / "cluster.yaml")
    sweep = c.create_sweep(example / "sweep.yaml")
    until(lambda: c.get_sweep(sweep.name).state != "running", timeout=600)
    done = c.get_sweep(sweep.name)
    assert done.state == "succeeded", (done.message, [(t.number, t.state, t.message) for t in done.trials])
    assert len(done.trials) == 10 and done.trial_counts.get("failed", 0) == 0
    assert done.best is not None and done.best.value is not None and done.best.value > 0.9
    assert {e.name for e in c.list_files(done.best.job, output="MODEL")} == {"model.pkl"}
    print("\nsweep:", done.trial_counts, "best", done.best.params, done.best.value)


@pytest.mark.slow
def test_batch_scoring_example_scores_a_folder_with_an_array(server_factory: object, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    example = tmp_path / "examples" / "batch-scoring"
    shutil.copytree(EXAMPLES / "batch-scoring", example)
    subprocess.run([sys.executable, "make_images.py"], cwd=example, check=True, capture_output=True)
    c = srv.client(experiment="batch-scoring")
    c.create_cluster(EXAMPLES / "sklearn-digits" / "cluster.yaml")
    job = c.create_job(example / "job.yaml")
    assert job.array is not None and job.array.count == 6  # 60 images, 10 a task
    ended = c.wait_job(job.name, timeout=300)
    assert ended.state == "succeeded", (ended.error, ended.array)
    assert {e.name for e in c.list_files(job.name, output="SCORES")} == {str(i) for i in range(6)}
    scores = c.download_file(job.name, output="SCORES", path="5/scores.csv", destination=tmp_path)
    lines = scores.read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == [f"digit-{i:03d}.npy" for i in range(50, 60)]
    from sklearn.datasets import load_digits

    truth = load_digits().target[1050:1060]
    right = sum(int(line.split(",")[1]) == t for line, t in zip(lines, truth, strict=True))
    assert right >= 8, lines
