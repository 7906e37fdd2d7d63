"""Metrics through a real server: reported by ``corral.runtime.report``, written to ``$CORRAL_METRICS_FILE`` by a
shell, read from stdout with a pattern, and sent over HTTP; stored as the job runs, downsampled with its spikes,
exported whole, and read again after a crash without a point counted twice."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral.core.errors import Conflict, InvalidRequest, InvalidSpec, NotFound, TooLarge
from tests.conftest import ServerHandle, until

CORRAL = str(Path(sys.executable).parent / "corral")


def _experiment(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:6]}"


def _values(points: object) -> list[tuple[int, float]]:
    return [(p.step, p.value) for p in points.points]  # type: ignore[attr-defined]


REPORTS = (
    "from corral import runtime\n"
    "for i in range(40):\n"
    "    runtime.report(step=i, loss=1 / (i + 1), acc=i / 40)\n"
    "runtime.report(lr=0.1)\n"
    "runtime.report(lr=0.01)\n"
)


def test_reported_by_the_runtime_by_a_shell_and_from_stdout(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment=_experiment("metrics"))
    script = tmp_path / "report.py"
    script.write_text(REPORTS)
    by_runtime = c.create_job({"cluster": "local", "custom": {"command": f"python3 {script}"}})
    shell = (
        """echo '{"step": 1, "x": 2.5}' >> "$CORRAL_METRICS_FILE"; """
        """echo 'not json' >> "$CORRAL_METRICS_FILE"; """
        """echo '{"step": 2, "x": 3, "time": 1700000000}' >> "$CORRAL_METRICS_FILE"; """
        # its last line without a newline: read once the job has ended
        """printf '{"step": 3, "x": -1}' >> "$CORRAL_METRICS_FILE\""""
    )
    by_shell = c.create_job({"cluster": "local", "custom": {"command": shell}})
    pattern = r"epoch (?P<step>\d+) loss=(?P<loss>[0-9.]+)( acc=(?P<acc>[0-9.]+))?"
    printing = "for i in 0 1 2 3; do echo \"epoch $i loss=0.$((9 - i))\"; done; echo 'epoch 4 loss=0.1 acc=0.75'"
    by_stdout = c.create_job({"cluster": "local", "custom": {"command": printing},
                              "metrics": {"from": "stdout", "pattern": pattern}})  # fmt: skip
    for job in (by_runtime, by_shell, by_stdout):
        assert c.wait_job(job.name, timeout=60).state == "succeeded", c.job_logs(job.name, stream="stderr")

    def names(job: str) -> list[str]:
        return sorted(s.name for s in c.job_metrics(job))

    until(lambda: names(by_runtime.name) == ["acc", "loss", "lr"] and names(by_stdout.name) == ["acc", "loss"])
    loss = c.job_metric(by_runtime.name, "loss")
    assert _values(loss) == [(i, 1 / (i + 1)) for i in range(40)] and not loss.downsampled
    assert _values(c.job_metric(by_runtime.name, "lr")) == [(0, 0.1), (1, 0.01)]  # no step: the series' next
    series = {s.name: s for s in c.job_metrics(by_runtime.name)}
    assert (series["loss"].last_step, series["loss"].min, series["loss"].max) == (39, 1 / 40, 1.0)
    assert series["acc"].last_value == 39 / 40 and series["loss"].attempt == 1 and series["loss"].rank == 0

    until(lambda: names(by_shell.name) == ["x"])
    x = c.job_metric(by_shell.name, "x")
    assert _values(x) == [(1, 2.5), (2, 3.0), (3, -1.0)]  # the line that is not JSON left out
    assert x.points[1].at.timestamp() == 1700000000

    assert _values(c.job_metric(by_stdout.name, "loss")) == [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6), (4, 0.1)]
    assert _values(c.job_metric(by_stdout.name, "acc")) == [(4, 0.75)]


def test_stored_as_the_job_runs(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment=_experiment("live"))
    go = tmp_path / "go"
    script = tmp_path / "live.py"
    script.write_text(
        "import os, time\nfrom corral import runtime\nruntime.report(step=0, loss=2.0)\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\nruntime.report(step=1, loss=1.0)\n"
    )
    job = c.create_job({"cluster": "local", "custom": {"command": f"python3 {script}"}})
    until(lambda: any(s.name == "loss" for s in c.job_metrics(job.name)), timeout=30)
    assert c.get_job(job.name).state == "running"  # stored while it runs, not after
    assert _values(c.job_metric(job.name, "loss")) == [(0, 2.0)]
    go.touch()
    assert c.wait_job(job.name, timeout=60).state == "succeeded"
    until(lambda: len(c.job_metric(job.name, "loss").points) == 2)


def test_each_rank_has_its_series(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment=_experiment("ranks"))
    script = tmp_path / "ranks.py"
    script.write_text("import os\nfrom corral import runtime\nrank = int(os.environ['RANK'])\n"
                      "runtime.report(step=0, loss=10.0 + rank)\n")  # fmt: skip
    job = c.create_job({"cluster": "local", "node_count": 2, "pytorch": {"script": str(script)}})
    assert c.wait_job(job.name, timeout=60).state == "succeeded", c.job_logs(job.name, stream="stderr")
    until(lambda: len(c.job_metrics(job.name)) == 2)
    assert [(s.rank, s.last_value) for s in c.job_metrics(job.name)] == [(0, 10.0), (1, 11.0)]
    assert _values(c.job_metric(job.name, "loss", rank=1)) == [(0, 11.0)]


def test_reported_over_http_downsampled_with_its_spikes_and_exported(server: ServerHandle) -> None:
    c = server.client(experiment=_experiment("http"))
    job = c.create_job({"cluster": "local", "custom": {"command": "sleep 30"}})
    until(lambda: c.get_job(job.name).state == "running")
    waiting = c.create_job({"cluster": "local", "node_count": 4, "custom": {"command": "true"}})  # behind it
    assert c.get_job(waiting.name).state == "queued"
    with pytest.raises(Conflict, match="has not started"):
        c.report_metrics(waiting.name, [{"name": "loss", "step": 0, "value": 1.0}])
    c.terminate_job(waiting.name)
    points = [{"name": "loss", "step": i, "value": 100.0 if i == 1234 else 1.0 + i % 7} for i in range(5000)]
    answer = c.report_metrics(job.name, points)
    assert (answer.accepted, answer.stop) == (5000, False)
    whole = c.job_metric(job.name, "loss", max_points=5000)
    assert whole.total == 5000 and not whole.downsampled and len(whole.points) == 5000
    small = c.job_metric(job.name, "loss", max_points=100)
    assert small.downsampled and small.total == 5000 and len(small.points) == 100
    assert [p.count for p in small.points] == [50] * 100 and [p.step for p in small.points] == list(range(0, 5000, 50))
    assert max(p.max for p in small.points) == 100.0  # the spike survives
    assert small.points[24].max == 100.0 and small.points[24].min == 1.0
    mean = sum(1.0 + i % 7 for i in range(50)) / 50
    assert small.points[0].value == pytest.approx(mean)
    # A step sent again replaces its point.
    c.report_metrics(job.name, [{"name": "loss", "step": 4999, "value": -5.0}])
    again = c.job_metric(job.name, "loss", max_points=5000)
    assert again.total == 5000 and again.points[-1].value == -5.0
    assert next(s for s in c.job_metrics(job.name) if s.name == "loss").min == -5.0
    csv = b"".join(c.export_metric(job.name, "loss", format="csv")).decode().splitlines()
    assert csv[0] == "attempt,rank,step,value,time" and len(csv) == 5001
    assert csv[1235].split(",")[:4] == ["1", "0", "1234", "100.0"]
    lines = b"".join(c.export_metric(job.name, "loss", format="jsonl")).decode().splitlines()
    assert len(lines) == 5000 and json.loads(lines[-1])["value"] == -5.0
    # What is refused, and says why.
    with pytest.raises(InvalidRequest, match=r"points\.0\.name"):
        c.report_metrics(job.name, [{"name": "a loss", "step": 0, "value": 1.0}])
    with pytest.raises(InvalidRequest, match=r"points: List should have at most 1000 items"):
        c._request("POST", c._job(job.name, None, None) + "/metrics", json={"points": points[:1001]})
    with pytest.raises(TooLarge, match="at most 1048576 bytes"):
        c._request("POST", c._job(job.name, None, None) + "/metrics", content=b"{" + b" " * (1 << 20) + b"}")
    with pytest.raises(NotFound, match="no metric 'accuracy'"):
        c.job_metric(job.name, "accuracy")
    with pytest.raises(InvalidRequest, match="format"):
        list(c.export_metric(job.name, "loss", format="xml"))
    c.terminate_job(job.name)
    assert c.report_metrics(job.name, [{"name": "loss", "step": 5000, "value": 0.0}]).stop  # being stopped


def test_a_wrong_pattern_is_refused_at_submission(server: ServerHandle) -> None:
    c = server.client()
    with pytest.raises(InvalidSpec, match=r"metrics\.pattern.*name the value of each metric"):
        c.create_job({"cluster": "local", "custom": {"command": "true"}, "metrics": {"pattern": "loss=(.*)"}})
    with pytest.raises(InvalidSpec, match=r"metrics\.pattern.*not a regular expression"):
        c.create_job({"cluster": "local", "custom": {"command": "true"}, "metrics": {"pattern": "(?P<x>"}})


def test_the_cli_shows_series_points_and_csv(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment=_experiment("cli"))
    script = tmp_path / "report.py"
    script.write_text(REPORTS)
    job = c.create_job({"cluster": "local", "custom": {"command": f"python3 {script}"}})
    assert c.wait_job(job.name, timeout=60).state == "succeeded"
    until(lambda: len(c.job_metrics(job.name)) == 3)

    def corral(*args: str) -> str:
        done = subprocess.run([CORRAL, "job", "metrics", job.name, "-e", job.experiment, *args],
                              env=server.env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = corral()
    assert "loss" in listing and "0.025" in listing and "acc" in listing
    rows = corral("--name", "loss", "-o", "csv").splitlines()
    assert rows[0] == "attempt,rank,step,value,time" and rows[1].startswith("1,0,0,1.0,") and len(rows) == 41
    table = corral("--name", "loss", "--max-points", "10")
    assert "40 points in 10" in table and "buckets" in table and "MEAN" in table
    assert json.loads(corral("--name", "lr", "-o", "json"))["points"][1]["value"] == 0.01


@pytest.mark.slow
def test_after_a_crash_the_files_are_read_again_and_nothing_is_counted_twice(
    server_factory: object, tmp_path: Path
) -> None:
    server: ServerHandle = server_factory()  # type: ignore[operator]
    c = server.client(experiment="crash")
    c.create_cluster({"name": "local", "scale": {"nodes": 1}})
    go = tmp_path / "go"
    script = tmp_path / "slow.py"
    script.write_text(
        "import os, time\nfrom corral import runtime\nfor i in range(20):\n    runtime.report(step=i, loss=float(i))\n"
        f"while not os.path.exists({str(go)!r}):\n    time.sleep(0.05)\n"
        "for i in range(20, 30):\n    runtime.report(step=i, loss=float(i))\n"
    )
    job = c.create_job({"cluster": "local", "custom": {"command": f"python3 {script}"}})
    until(lambda: any(s.last_step == 19 for s in c.job_metrics(job.name)), timeout=30)
    server.kill()
    go.touch()  # the job goes on while no server reads
    server.start()
    c = server.client(experiment="crash")
    assert c.wait_job(job.name, timeout=60).state == "succeeded"
    until(lambda: c.job_metrics(job.name)[0].last_step == 29)
    assert _values(c.job_metric(job.name, "loss")) == [(i, float(i)) for i in range(30)]
