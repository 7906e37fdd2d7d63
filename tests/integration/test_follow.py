"""Following a job through a real server: its state, every rank's lines with their nodes, progress bars kept,
and a follow that outlives a server restart without repeating or losing a line (issue 10)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from corral.core.models import FollowEvent
from tests.conftest import ServerHandle, until


def test_follow_gives_state_every_rank_and_keeps_carriage_returns(server: ServerHandle) -> None:
    c = server.client()
    command = r"printf '10%%\r50%%\r100%%\ndone on %s\n' $CORRAL_NODE_RANK; echo oops >&2"
    job = c.create_job({"cluster": "local", "node_count": 2, "custom": {"command": command}})
    events = list(c.follow_job(job.name))
    kinds = [e.kind for e in events]
    assert kinds[0] == "state" and kinds[-1] == "end"
    running = next(e for e in events if e.kind == "state" and e.nodes)  # running, or already succeeded
    assert len(running.nodes) == 2 and running.ranks == [0, 1]
    lines = {(e.rank, e.node, e.stream, line) for e in events if e.kind == "log" for line in e.lines}
    for rank in (0, 1):
        node = running.nodes[rank]
        assert (rank, node, "stdout", "10%\r50%\r100%") in lines  # a progress bar as written
        assert (rank, node, "stdout", f"done on {rank}") in lines
        assert (rank, node, "stderr", "oops") in lines
    end = events[-1]
    assert end.state == "succeeded" and end.exit_code == 0 and end.seconds is not None and end.seconds >= 0
    # The one-rank form the SDK has always had gives the same lines, \r included.
    assert ("stdout", "10%\r50%\r100%") in list(c.follow_logs(job.name, rank=1))
    shown = c.get_job(job.name)
    assert shown.rank_nodes == running.nodes


def test_a_queued_job_says_why_it_waits_then_where_it_runs(server_factory: object) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    blocker = c.create_job({"cluster": "one", "custom": {"command": "sleep 2"}})
    until(lambda: c.get_job(blocker.name).state == "running")
    waiting = c.create_job({"cluster": "one", "custom": {"command": "sleep 1; echo finally"}})
    states = [(e.state, e.reason) for e in c.follow_job(waiting.name) if e.kind == "state"]
    assert states[0][0] == "queued"
    assert ("queued", "Resources") in states
    order = [s for s, _ in states]
    assert order.index("queued") < order.index("running") < order.index("succeeded") == len(order) - 1


def test_a_follow_outlives_a_server_restart_losing_and_repeating_nothing(server_factory: object) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "one", "scale": {"nodes": 1}})
    command = "for i in $(seq 0 79); do echo line $i; sleep 0.05; done"
    job = c.create_job({"cluster": "one", "custom": {"command": command}})
    seen: list[FollowEvent] = []

    def follow() -> None:
        seen.extend(srv.client().follow_job(job.name, reconnect_for=60))

    follower = threading.Thread(target=follow)
    follower.start()
    until(lambda: any(e.kind == "log" for e in seen))
    srv.kill()  # SIGKILL mid-stream: the job goes on, the follower reconnects to the next server
    time.sleep(0.5)
    srv.start()
    follower.join(timeout=90)
    assert not follower.is_alive()
    lines = [line for e in seen if e.kind == "log" for line in e.lines]
    assert lines == [f"line {i}" for i in range(80)]
    assert seen[-1].kind == "end" and seen[-1].state == "succeeded"


@pytest.mark.slow
def test_a_follow_of_700_ranks_resumes_with_small_ids_and_starts_at_a_tail(
    server_factory: object, tmp_path: Path
) -> None:
    """Event ids name one stream each, however many ranks are followed (they once held every stream's offset,
    past 8,000 characters at this size); across a server restart the SDK resumes with their union, losing and
    repeating no line of 700 ranks; ``tail`` starts each stream at its last lines."""
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    c = srv.client()
    c.create_cluster({"name": "wide", "scale": {"nodes": 2}})
    script = tmp_path / "ranks.sh"
    script.write_text(
        'for i in 1 2 3; do echo "rank $RANK line $i of a log long enough"; done\n'
        'while [ ! -e "$GO" ]; do sleep 1; done\n'
        'echo "rank $RANK done"; echo "rank $RANK says bye" >&2\n'
    )
    go = tmp_path / "go"
    spec = {
        "cluster": "wide", "node_count": 2, "env": {"GO": str(go)},
        "pytorch": {"script": str(script), "interpreter": "sh", "processes_per_node": 350},
    }  # fmt: skip
    job = c.create_job(spec)
    seen: list[FollowEvent] = []
    ids: list[str] = []

    def follow() -> None:
        seen.extend(srv.client().follow_job(job.name, reconnect_for=90))

    follower = threading.Thread(target=follow)
    follower.start()
    until(lambda: sum(len(e.lines) for e in seen if e.kind == "log") >= 3 * 700, timeout=120)
    srv.kill()
    go.touch()  # the ranks finish while no server runs (each looks once a second: 700 forks a second, not 3,500)
    time.sleep(1.5)
    srv.start()
    follower.join(timeout=120)
    assert not follower.is_alive()
    stdout = sorted((e.rank, line) for e in seen if e.kind == "log" and e.stream == "stdout" for line in e.lines)
    expected = [(r, f"rank {r} line {i} of a log long enough") for r in range(700) for i in (1, 2, 3)]
    assert stdout == sorted(expected + [(r, f"rank {r} done") for r in range(700)])
    assert sorted(e.rank for e in seen if e.kind == "log" and e.stream == "stderr") == list(range(700))
    assert seen[-1].kind == "end" and seen[-1].state == "succeeded"
    with httpx.stream(
        "GET", f"{srv.url}/api/v1/workspaces/default/experiments/default/jobs/{job.name}/logs",
        params={"follow": "true", "ranks": "all"}, headers={"Authorization": f"Bearer {srv.token}"},
    ) as response:  # fmt: skip
        ids = [line[4:] for line in response.iter_lines() if line.startswith("id: ")]
    assert len(ids) >= 1400 and max(len(i) for i in ids) < 20
    tailed = [e for e in c.follow_job(job.name, ranks="0,699", tail=1) if e.kind == "log"]
    assert sorted((e.rank, e.stream, e.lines[0]) for e in tailed) == [
        (0, "stderr", "rank 0 says bye"), (0, "stdout", "rank 0 done"),
        (699, "stderr", "rank 699 says bye"), (699, "stdout", "rank 699 done"),
    ]  # fmt: skip
