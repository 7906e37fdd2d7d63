"""Job arrays through a real server: one row at submission, tasks made as the queue takes them, each index with
its own retries, failed indexes named, one index terminated, every task's outputs under the array's folder, and
a server killed mid-array that loses no task and runs none twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.core.errors import InvalidRequest, InvalidSpec
from tests.conftest import ServerHandle, until

CORRAL = str(Path(sys.executable).parent / "corral")


def array_job(command: str, **array: Any) -> dict[str, Any]:
    return {"cluster": "local", "custom": {"command": command}, "array": array}


def wait_ended(c: Any, name: str, timeout: float = 120) -> Any:
    until(lambda: c.get_job(name).state in ("succeeded", "failed", "terminated"), timeout=timeout)
    return c.get_job(name)


def test_an_array_is_one_row_its_tasks_run_and_write_under_its_folder(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment="arrays")
    out = tmp_path / "out"
    command = 'echo "$CORRAL_ARRAY_INDEX of $CORRAL_ARRAY_COUNT in $CORRAL_ARRAY_JOB" > "$CORRAL_OUTPUT_OUT/done.txt"'
    spec = {**array_job(command, count=12, parallelism=3), "outputs": [{"id": "OUT", "path": str(out)}]}
    job = c.create_job(spec, name="squares")
    assert job.state == "running" and job.array is not None and job.array.count == 12
    ended = wait_ended(c, "squares")
    assert ended.state == "succeeded", (ended.error, ended.array)
    assert ended.array is not None and ended.array.counts == {"succeeded": 12} and ended.array.failed_indexes == []
    assert [j.name for j in c.iter_jobs()] == ["squares"]  # one row in the list
    tasks = list(c.iter_jobs(prefix="squares."))
    assert sorted(j.name for j in tasks) == sorted(f"squares.{i}" for i in range(12))
    assert all(len(t.attempts) == 1 for t in tasks)
    # Every task's outputs are under the array's folder, in <index>/.
    root = out / "default" / "arrays" / "squares" / ended.uid / "OUT"
    for i in range(12):
        assert (root / str(i) / "done.txt").read_text() == f"{i} of 12 in squares\n"
    assert {e.name for e in c.list_files("squares", output="OUT")} == {str(i) for i in range(12)}
    # At most 3 at once: no task started before the one 3 places earlier had ended.
    starts = {int(t.name.split(".")[1]): t for t in tasks}
    for i in range(3, 12):
        assert starts[i].started_at >= starts[i - 3].ended_at, i  # type: ignore[operator]
    # Deleted, it goes with its tasks and their files.
    task_dirs = [Path(t.job_dir) for t in tasks]
    assert all(d.exists() for d in task_dirs)
    c.delete_job("squares")
    assert list(c.iter_jobs(prefix="squares")) == [] and not any(d.exists() for d in task_dirs)


def test_items_retries_per_index_failed_indexes_and_one_index_terminated(server: ServerHandle, tmp_path: Path) -> None:
    c = server.client(experiment="arrays-items")
    tries = tmp_path / "tries"
    tries.mkdir(mode=0o777)
    # Item "flaky" fails on its first try only; item "bad" always fails; item "slow" waits to be terminated.
    command = (
        f'item=$(python3 -c "import json,os; print(json.load(open(os.environ[\\"CORRAL_ARRAY_ITEMS_FILE\\"]))[0])"); '
        f"echo x >> {tries}/$item; "
        f"case $item in flaky) [ $(wc -l < {tries}/$item) -ge 2 ];; bad) exit 3;; slow) sleep 60;; *) true;; esac"
    )
    spec = array_job(command, items=["a", "flaky", "bad", "slow", "b"], retry_per_index=1, parallelism=5)
    job = c.create_job(spec, name="items")
    until(lambda: (tries / "slow").exists())
    terminated = c.terminate_job("items", index=3)
    assert terminated.name == "items.3"
    ended = wait_ended(c, "items")
    assert ended.state == "failed" and ended.error is not None
    assert ended.array is not None and ended.array.failed_indexes == [2, 3]
    assert "2 of 5 indexes did not succeed: 2, 3" in ended.error.message
    assert (tries / "flaky").read_text() == "x\nx\n"  # its retry: its own second attempt
    assert (tries / "bad").read_text() == "x\nx\n" and (tries / "a").read_text() == "x\n"  # one retry, no more
    assert c.get_job("items.2").attempts[-1].exit_code == 3
    assert c.get_job("items.3").state == "terminated"
    assert job.array is not None


def test_max_failed_stops_the_array_and_a_wrong_array_is_refused(server: ServerHandle) -> None:
    c = server.client(experiment="arrays-max")
    ended = wait_ended(c, c.create_job(array_job("exit 1", count=50, parallelism=2, max_failed=3), name="stop").name)
    assert ended.state == "failed" and ended.array is not None
    made = sum(ended.array.counts.values())
    assert ended.array.counts.get("failed", 0) >= 3 and made <= 5  # it stopped making tasks
    assert "indexes not run" in ended.error.message  # type: ignore[union-attr]
    with pytest.raises(InvalidSpec, match="give exactly one of count, items, items_from"):
        c.create_job(array_job("true", count=2, items=[1]))
    with pytest.raises(InvalidSpec, match=r"array\.items_from\.path: .* is not a folder"):
        c.create_job(array_job("true", items_from={"path": "/no/such/folder"}))
    with pytest.raises(InvalidRequest, match="is not an array"):
        job = c.create_job({"cluster": "local", "custom": {"command": "sleep 5"}})
        c.terminate_job(job.name, index=0)


def test_batch_scoring_over_a_folder_of_files(server: ServerHandle, tmp_path: Path) -> None:
    data = tmp_path / "images"
    data.mkdir()
    for i in range(7):
        (data / f"img{i}.txt").write_text(str(i * i))
    (data / "notes.md").write_text("not an image")
    score = (
        'python3 -c "import json, os; files = json.load(open(os.environ[\\"CORRAL_ARRAY_ITEMS_FILE\\"])); '
        'out = os.environ[\\"CORRAL_OUTPUT_SCORES\\"]; '
        '[open(os.path.join(out, os.path.basename(f)), \\"w\\").write(str(int(open(f).read()) + 1)) for f in files]"'
    )
    c = server.client(experiment="arrays-scoring")
    spec = {
        "cluster": "local", "custom": {"command": score},
        "array": {"items_from": {"path": str(data), "glob": "*.txt", "per_task": 3}},
        "outputs": [{"id": "SCORES", "path": str(tmp_path / "scores")}],
    }  # fmt: skip
    job = c.create_job(spec, name="scoring")
    assert job.array is not None and job.array.count == 3  # 7 files, 3 a task
    ended = wait_ended(c, "scoring")
    assert ended.state == "succeeded", ended.error
    root = tmp_path / "scores" / "default" / "arrays-scoring" / "scoring" / ended.uid / "SCORES"
    scored = {p.name: p.read_text() for p in root.glob("*/*.txt")}
    assert scored == {f"img{i}.txt": str(i * i + 1) for i in range(7)}
    assert sorted(p.name for p in (root / "2").iterdir()) == ["img6.txt"]


def test_the_cli_array_shorthand_and_terminate_by_index(server: ServerHandle, tmp_path: Path) -> None:
    import yaml

    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"cluster": "local", "custom": {"command": "sleep 30"}}))

    def corral(*args: str) -> str:
        done = subprocess.run([CORRAL, *args, "-e", "arrays-cli"], env=server.env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    name = corral("job", "create", "-f", str(tmp_path / "job.yaml"), "--array", "0-9%2", "--name", "cli").strip()
    assert name == "cli"
    c = server.client(experiment="arrays-cli")
    until(lambda: c.get_job("cli").array.counts.get("running", 0) == 2)  # type: ignore[union-attr]
    assert "cli.7 terminated" in corral("job", "terminate", "cli[7]")  # not made yet: made, and ended at once
    assert "10 tasks" in corral("job", "show", "cli")
    assert "cli terminating" in corral("job", "terminate", "cli") or c.get_job("cli").state == "terminated"
    ended = wait_ended(c, "cli")
    assert ended.state == "terminated" and ended.array is not None
    assert sum(ended.array.counts.values()) <= 4  # the 2 running, index 7, and none made after
    assert all(s == "terminated" for s in ended.array.counts) or "succeeded" not in ended.array.counts


@pytest.mark.slow
def test_a_killed_server_loses_no_task_and_runs_none_twice(server_factory: object, tmp_path: Path) -> None:
    server: ServerHandle = server_factory()  # type: ignore[operator]
    c = server.client(experiment="arrays-crash")
    c.create_cluster({"name": "local", "scale": {"nodes": 2}})
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o777)
    c.create_job(array_job(f'echo $CORRAL_ARRAY_INDEX >> {runs}/ran; sleep 0.3', count=20, parallelism=2),
                 name="crash")  # fmt: skip
    until(lambda: len((runs / "ran").read_text().split()) >= 5 if (runs / "ran").exists() else False)
    server.kill()
    time.sleep(1)
    server.start()
    c = server.client(experiment="arrays-crash")
    ended = wait_ended(c, "crash", timeout=180)
    assert ended.state == "succeeded", ended.error
    ran = (runs / "ran").read_text().split()
    assert sorted(map(int, ran)) == list(range(20))  # each index once
    tasks = list(c.iter_jobs(prefix="crash."))
    assert len(tasks) == 20 and all(len(t.attempts) == 1 for t in tasks)
    assert json.loads(json.dumps(ended.array.model_dump()))["counts"] == {"succeeded": 20}  # type: ignore[union-attr]
