"""The resume example: preempted mid-run, it resumes on another node and ends with the weights of an
uninterrupted run, redoing at most K steps."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from tests.conftest import ServerHandle

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resume"


def test_preempted_training_resumes_with_the_same_final_weights(server_factory: object, tmp_path: Path) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    example = tmp_path / "resume"
    shutil.copytree(EXAMPLE, example)
    spec = (example / "job.yaml").read_text().replace("../../.corral-demo/outputs", str(tmp_path / "out"))
    (example / "job.yaml").write_text(spec)
    c = srv.client(experiment="resume")
    c.create_cluster(example / "cluster.yaml")

    straight = c.wait_job(c.create_job(example / "job.yaml", name="straight").name, timeout=120)
    assert straight.state == "succeeded" and len(straight.attempts) == 1

    job = c.create_job(example / "job.yaml", name="preempted")
    deadline = time.monotonic() + 60
    while "checkpoint at step 150" not in c.job_logs(job.name):
        assert time.monotonic() < deadline, c.job_logs(job.name)
        time.sleep(0.05)
    node = c.get_job(job.name).nodes[0]
    c.preempt_node("spot", node)
    done = c.wait_job(job.name, timeout=120)
    assert done.state == "succeeded", done.error
    assert [a.reason for a in done.attempts] == ["Preempted", "Exited"]
    assert done.attempts[1].nodes != [node], "resumed on another node"
    first, second = c.job_logs(job.name, attempt=1), c.job_logs(job.name, attempt=2)
    stopped = int(re.search(r"notice at step (\d+)", first).group(1))  # type: ignore[union-attr]
    resumed = int(re.search(r"attempt 2 starts at step (\d+)", second).group(1))  # type: ignore[union-attr]
    assert 0 <= stopped - resumed <= 50, (stopped, resumed)

    def weights(name: str) -> dict[str, object]:
        return json.loads(next((tmp_path / "out").rglob(f"{name}/*/model/weights.json")).read_text())

    assert weights("preempted") == weights("straight"), "the same final weights as an uninterrupted run"
