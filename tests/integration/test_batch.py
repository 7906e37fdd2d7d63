"""Many jobs in one submission (``POST …/jobs/batch``, ``Client.create_jobs``): all queued in one transaction, or
none, the first refused naming its place; the user's limits counted for each job."""

from __future__ import annotations

import pytest

from corral.core.errors import AlreadyExists, InvalidRequest, InvalidSpec, NotFound, TooLarge, TooManyRequests
from tests.conftest import ServerHandle, until


def test_a_batch_is_queued_whole_and_runs(server: ServerHandle) -> None:
    c = server.client(experiment="batch")
    specs = [{"cluster": "local", "custom": {"command": f"echo task {i}"}} for i in range(40)]
    names = [f"b-{i}" for i in range(39)] + [None]  # the last one named by the server
    made = c.create_jobs(specs, names=names)
    assert [j.name for j in made[:39]] == names[:39] and made[39].name.startswith("job-")
    assert all(j.state == "queued" and j.experiment == "batch" for j in made)
    until(lambda: all(c.get_job(j.name).state == "succeeded" for j in made), timeout=120)
    assert c.get_job("b-7").logs() == "task 7\n"


def test_a_batch_with_one_bad_job_stores_none_and_says_which(server: ServerHandle) -> None:
    c = server.client(experiment="batch-bad")
    good = {"cluster": "local", "custom": {"command": "true"}}
    with pytest.raises(InvalidSpec) as bad:
        c.create_jobs([good, good, {"cluster": "local", "node_count": 0, "custom": {"command": "true"}}])
    assert bad.value.message.startswith("jobs[2]: ") and "node_count" in bad.value.message
    assert bad.value.details and bad.value.details[0]["loc"].startswith("jobs.2.")
    with pytest.raises(NotFound, match=r"jobs\[1\]: cluster .no-such-cluster. not found"):
        c.create_jobs([good, {"cluster": "no-such-cluster", "custom": {"command": "true"}}])
    c.create_job(good, name="taken")
    with pytest.raises(AlreadyExists, match="'taken'"):
        c.create_jobs([good, good], names=["fresh", "taken"])
    with pytest.raises(InvalidRequest, match=r"jobs\[1\]: .*'twice'.*jobs\[0\]"):
        c.create_jobs([good, good], names=["twice", "twice"])
    assert [j.name for j in c.list_jobs()] == ["taken"]  # nothing else was stored
    with pytest.raises(InvalidSpec, match="jobs"):
        c._request("POST", "/workspaces/default/experiments/batch-bad/jobs/batch", json={"jobs": []})


def test_a_batch_counts_against_the_users_limits(server_factory) -> None:  # type: ignore[no-untyped-def]
    handle = server_factory(settings={"CORRAL_MAX_QUEUED_JOBS_PER_USER": "5", "CORRAL_SUBMIT_BURST": "8"})
    c = handle.client(experiment="limits")
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    spec = {"cluster": "one", "custom": {"command": "sleep 60"}}  # one runs, the others wait
    with pytest.raises(TooLarge, match="submit_burst"):
        c.create_jobs([spec] * 9)
    with pytest.raises(TooManyRequests, match="submits 6 more"):
        c.create_jobs([spec] * 6)
    assert len(c.create_jobs([spec] * 5)) == 5
    assert c.list_jobs() and len(c.list_jobs()) == 5
