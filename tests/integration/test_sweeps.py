"""Sweeps through a real server: a deterministic trainer whose loss is a known function of its parameter, so
the trials a grid visits, the ones the median pruner stops and the best one are known exactly; a server killed
mid-sweep loses no trial and runs none twice."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.core.errors import InvalidSpec, NotFound
from tests.conftest import ServerHandle, until

CORRAL = str(Path(sys.executable).parent / "corral")

#: loss(step) = (x - 3)² + 10 / (step + 1): at every step, a trial's place among the others is that of (x - 3)².
TRAINER = """
import json, os, sys, time
from corral import runtime
x = float(sys.argv[1])
assert float(os.environ["CORRAL_PARAM_X"]) == x
assert float(json.load(open(os.environ["CORRAL_PARAMS_FILE"]))["x"]) == x
for step in range(STEPS):
    runtime.report(step=step, loss=(x - 3) ** 2 + 10 / (step + 1))
    runtime.flush()
    time.sleep(PAUSE)
"""


def trainer(tmp_path: Path, steps: int = 5, pause: float = 0.2) -> Path:
    script = tmp_path / "train.py"
    script.write_text(TRAINER.replace("STEPS", str(steps)).replace("PAUSE", str(pause)))
    return script


def sweep_spec(script: Path, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "trial": {"cluster": "local", "custom": {"command": f"python3 {script} ${{x}}"}},
        "parameters": {"x": {"type": "float", "low": 0, "high": 6, "step": 1}},
        "objective": {"metric": "loss", "mode": "min"},
        "sampler": {"type": "grid", "seed": 7},
        "pruner": {"type": "median", "startup_trials": 2},
        "max_trials": 20,
        "parallelism": 1,
    }
    spec.update(changes)
    return spec


def test_a_grid_sweep_visits_each_point_once_prunes_what_the_median_says_and_finds_the_best(
    server: ServerHandle, tmp_path: Path
) -> None:
    c = server.client(experiment="sweep-grid")
    sweep = c.create_sweep(sweep_spec(trainer(tmp_path), name="grid"))
    assert sweep.state == "running"
    until(lambda: c.get_sweep("grid").state != "running", timeout=180)
    done = c.get_sweep("grid")
    assert done.state == "succeeded", done.message
    by_number = sorted(done.trials, key=lambda t: t.number)
    assert sorted(t.params["x"] for t in by_number) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # each once
    # What the median pruner must do, trial by trial in the order they ran (one at a time): a trial is pruned
    # once two have completed and its (x - 3)² is above the median of theirs.
    completed: list[float] = []
    expected: dict[int, str] = {}
    for t in by_number:
        distance = (t.params["x"] - 3) ** 2
        if len(completed) >= 2 and distance > statistics.median(completed):
            expected[t.number] = "pruned"
        else:
            expected[t.number] = "complete"
            completed.append(distance)
    assert {t.number: t.state for t in by_number} == expected
    assert "pruned" in expected.values() and "complete" in expected.values()
    for t in by_number:
        job = c.get_job(t.job)
        if t.state == "pruned":
            assert job.state == "terminated" and job.error is not None and job.error.code == "Pruned", job.error
            assert len(job.attempts) == 1 and job.attempts[0].reason == "Pruned"  # not retried
            assert t.message and t.message.startswith("loss ") and "worse than the median" in t.message
            assert job.error.message == t.message
        else:
            assert job.state == "succeeded" and t.value == pytest.approx((t.params["x"] - 3) ** 2 + 2)
    assert done.best is not None and done.best.params == {"x": 3.0} and done.best.value == pytest.approx(2.0)
    assert done.trials[0].number == done.best.number  # best first
    assert done.trial_counts == {"complete": len(completed), "pruned": 7 - len(completed)}


@pytest.mark.slow
def test_a_killed_server_loses_no_trial_and_runs_none_twice(server_factory: object, tmp_path: Path) -> None:
    server: ServerHandle = server_factory()  # type: ignore[operator]
    c = server.client(experiment="sweep-crash")
    c.create_cluster({"name": "local", "scale": {"nodes": 2}})
    spec = sweep_spec(trainer(tmp_path, steps=6, pause=0.25), name="crash", max_trials=6, parallelism=2,
                      sampler={"type": "random", "seed": 3}, pruner={"type": "none"},
                      parameters={"x": {"type": "float", "low": 0, "high": 6}})  # fmt: skip
    c.create_sweep(spec)
    until(lambda: c.get_sweep("crash").trial_counts.get("complete", 0) >= 2, timeout=120)
    server.kill()
    time.sleep(1)
    server.start()
    c = server.client(experiment="sweep-crash")
    until(lambda: c.get_sweep("crash").state != "running", timeout=180)
    done = c.get_sweep("crash")
    assert done.state == "succeeded", done.message
    assert sorted(t.number for t in done.trials) == list(range(6))
    assert all(t.state == "complete" for t in done.trials), [(t.number, t.state, t.message) for t in done.trials]
    jobs = list(c.iter_jobs())
    assert sorted(j.name for j in jobs) == sorted(f"crash-{n}" for n in range(6))  # one job a trial
    # None ran twice. A trial placed as the server was killed, before its process started, has a NotStarted attempt
    # first (the restart requeues it rather than run it twice: test_crash.py): only one attempt of each ran.
    ran = {j.name: [a.reason for a in j.attempts if a.reason != "NotStarted"] for j in jobs}
    assert all(reasons == ["Exited"] for reasons in ran.values()), {j.name: j.attempts for j in jobs}
    for t in done.trials:
        assert t.value == pytest.approx((t.params["x"] - 3) ** 2 + 10 / 6)


def test_a_wrong_sweep_is_refused_with_the_field_it_names(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment="sweep-wrong")
    script = trainer(tmp_path)
    with pytest.raises(InvalidSpec, match=r"\$\{y\} is no parameter of the sweep"):
        c.create_sweep(sweep_spec(script, trial={"cluster": "local", "custom": {"command": "echo ${y}"}}))
    with pytest.raises(InvalidSpec, match=r"grid: parameters\.x: give a step"):
        c.create_sweep(sweep_spec(script, parameters={"x": {"type": "float", "low": 0, "high": 1}}))
    with pytest.raises(InvalidSpec, match=r"parameters\.x\.float\.low"):
        c.create_sweep(sweep_spec(script, parameters={"x": {"type": "float", "low": "a", "high": 1}}))
    with pytest.raises(InvalidSpec, match=r"node_count"):  # the first trial, checked as a job
        c.create_sweep(sweep_spec(script, trial={"cluster": "local", "node_count": 99, "custom": {"command": "true"}}))
    with pytest.raises(NotFound, match=r"cluster 'nowhere' not found"):
        c.create_sweep(sweep_spec(script, trial={"cluster": "nowhere", "custom": {"command": "true"}}))
    with pytest.raises(NotFound, match="experiment 'sweep-wrong' not found"):  # nothing half made, not even it
        c.list_sweeps()


def test_the_cli_makes_shows_and_terminates_a_sweep(server: ServerHandle, tmp_path: Path) -> None:
    import yaml

    values = tmp_path / "values.txt"
    values.write_text("# the values of x\n1\n3\n\n5\n")
    spec = sweep_spec(trainer(tmp_path, steps=3, pause=0.1), name="cli", sampler={"type": "grid"},
                      pruner={"type": "none"}, parameters={"x": {"type": "file", "path": "values.txt"}})  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))

    def corral(*args: str) -> str:
        done = subprocess.run([CORRAL, *args, "-e", "sweep-cli"], env=server.env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert corral("sweep", "create", "-f", str(tmp_path / "sweep.yaml")).strip() == "cli"
    c = server.client(experiment="sweep-cli")
    until(lambda: c.get_sweep("cli").state != "running", timeout=120)
    shown = corral("sweep", "show", "cli")
    assert "succeeded" in shown and "x=3" in shown and "cli-" in shown
    best = corral("sweep", "best", "cli")
    assert "x" in best and "3" in best and "2.0" not in best.split("objective")[0]
    assert c.get_sweep("cli").best.params == {"x": "3"}  # type: ignore[union-attr]  # a file's values are text
    assert "cli" in corral("sweep", "list")
    long = sweep_spec(trainer(tmp_path, steps=100, pause=0.5), name="long", pruner={"type": "none"})
    c.create_sweep(long)
    until(lambda: c.get_sweep("long").trial_counts.get("running", 0) == 1)
    assert corral("sweep", "terminate", "long").strip() == "long terminated"
    trials = c.get_sweep("long").trials
    assert [t.state for t in trials] == ["terminated"] * len(trials)  # none made after its end
    running = trials[0]
    until(lambda: c.get_job(running.job).state == "terminated")
    time.sleep(1)
    assert sum(c.get_sweep("long").trial_counts.values()) == 1  # no trial after it ended
