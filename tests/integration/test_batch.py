"""Many jobs in one submission (``POST …/jobs/batch``, ``Client.create_jobs``): all queued in one transaction, or
none, the first refused naming its place; the user's limits counted for each job."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


def test_concurrent_submissions_are_each_all_or_none(server: ServerHandle) -> None:
    """Many clients at once (the group commit stores them together): a name given by several is stored once, the
    others get 409; a batch holding a taken name stores none of its jobs; every other submission is stored."""
    experiment = "concurrent"
    spec = {"cluster": "local", "custom": {"command": "true"}}
    clients = [server.client(experiment=experiment) for _ in range(8)]

    def submit(i: int) -> str:
        c = clients[i % len(clients)]
        try:
            if i % 10 == 9:  # a batch whose second job takes a name another request also gives
                c.create_jobs([spec, spec], names=[f"batch-{i}", f"shared-{i % 3}"])
            else:
                c.create_job(spec, name=f"shared-{i % 3}" if i % 10 == 0 else f"own-{i}")
        except AlreadyExists:
            return "taken"
        return "stored"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(submit, range(120)))
    names = {j.name for j in clients[0].iter_jobs()}
    shared = {n for n in names if n.startswith("shared-")}
    batches = {n for n in names if n.startswith("batch-")}
    own = {n for n in names if n.startswith("own-")}
    assert own == {f"own-{i}" for i in range(120) if i % 10 not in (0, 9)}
    assert shared == {"shared-0", "shared-1", "shared-2"}  # each given by 8 requests, stored once
    # A batch was stored whole exactly when its shared name was free for it; else none of it.
    stored_batches = [i for i in range(9, 120, 10) if results[i] == "stored"]
    assert batches == {f"batch-{i}" for i in stored_batches}
    assert results.count("stored") == len(own) + 3  # each shared name by one request, a single or a batch
    until(lambda: all(j.state == "succeeded" for j in clients[0].iter_jobs()), timeout=120)
