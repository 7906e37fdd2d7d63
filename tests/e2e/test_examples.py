"""The examples run as the README says they do (marked slow: they train real models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ServerHandle

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
