"""A bounded chaos run (slow): 200 short jobs on 4 preemptible nodes while a driver kills job processes,
loses and preempts nodes, and SIGKILLs and restarts the server; then every invariant of the failure
handling is checked."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import time
from pathlib import Path

import pytest

from corral.backends.local.wrapper import wrapper_pids
from corral.core.errors import CorralError
from corral.core.states import JobState, can_transition
from tests.conftest import ServerHandle

JOBS = 200
MAX_ATTEMPTS = 6


def group_members(leader: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == leader and int(entry) != leader:
                    members.append(int(entry))
    return members


@pytest.mark.slow
def test_chaos_keeps_every_invariant(server_factory: object, tmp_path: Path) -> None:
    srv: ServerHandle = server_factory()  # type: ignore[operator]
    home = str(srv.home)
    rng = random.Random(7)
    c = srv.client(experiment="chaos")
    c.create_cluster({"name": "chaos", "priority": "low", "scale": {"nodes": 4}})
    spec = {
        "cluster": "chaos",
        "retry": {"max_attempts": MAX_ATTEMPTS, "exit_codes": [137, 143]},
        "limits": {"termination_grace": "2s"},
    }
    names = []
    for i in range(JOBS):
        command = f"sleep 0.{rng.randint(1, 9)}; echo done {i}"
        names.append(c.create_job({**spec, "name": f"j{i}", "custom": {"command": command}}).name)

    actions = {"kill": 0, "lose": 0, "preempt": 0, "restart": 0}
    restarts_at = {8.0, 20.0, 32.0}
    started = time.monotonic()
    deadline = started + 240

    def unfinished() -> int:
        return sum(1 for j in c.list_jobs() if not j.state.is_terminal)

    while time.monotonic() < deadline:
        elapsed = time.monotonic() - started
        try:
            if unfinished() == 0:
                break
            if restarts_at and elapsed >= min(restarts_at):
                restarts_at.discard(min(restarts_at))
                srv.kill()
                srv.start()
                c = srv.client(experiment="chaos")
                actions["restart"] += 1
                continue
            live = [pid for path, pid in wrapper_pids().items() if path.startswith(home) and "/attempts/" in path]
            roll = rng.random()
            if live and roll < 0.4:  # a job's own process dies (exit 137): retried for its exit code
                for pid in group_members(rng.choice(live)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                actions["kill"] += 1
            elif live and roll < 0.55:  # the node's processes vanish without an exit code: node lost
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(rng.choice(live), signal.SIGKILL)
                actions["lose"] += 1
            elif roll < 0.7:
                busy = [n for n in c.list_nodes("chaos") if n.state == "running"]
                if busy:
                    with contextlib.suppress(CorralError):
                        c.preempt_node("chaos", rng.choice(busy).name)
                    actions["preempt"] += 1
            for node in c.list_nodes("chaos"):
                if node.state == "unusable":
                    with contextlib.suppress(CorralError):
                        c.recover_node("chaos", node.name)
        except CorralError:
            time.sleep(0.2)  # the server is restarting
        time.sleep(0.15)
    assert unfinished() == 0, "every job ended within the time"
    assert actions["kill"] and actions["lose"] and actions["preempt"] and actions["restart"] == 3, actions

    jobs = {j.name: j for j in c.list_jobs()}
    assert set(jobs) == set(names)
    for name in names:
        job = c.get_job(name)
        events = c.job_events(name)
        # Exactly one terminal state, reached through allowed transitions only, with no event lost.
        chain = [e.to_state for e in events]
        assert chain[0] == "queued" and JobState(chain[-1]).is_terminal and chain[-1] == job.state.value, chain
        assert sum(JobState(s).is_terminal for s in chain) == 1, chain
        for before, after in itertools.pairwise(events):
            assert after.from_state == before.to_state, chain
            assert can_transition(JobState(before.to_state), JobState(after.to_state)), chain
        assert chain.count("running") == len(job.attempts), (chain, job.attempts)
        # Never two attempts at once: each ended before the next started.
        for a, b in itertools.pairwise(job.attempts):
            assert a.ended_at is not None and b.started_at is not None and a.ended_at <= b.started_at
        assert all(a.ended_at is not None for a in job.attempts)
        # The codes recorded are the processes' own: 0 when it ran through, 137/143 when killed, none when lost.
        for a in job.attempts:
            expected = {
                "Exited": {0},
                "ExitCode": {137, 143},
                "Preempted": {None, 0, 137, 143},
                "NodeLost": {None, 137, 143},
            }
            assert a.exit_code in expected.get(a.reason or "", {a.exit_code}), (name, a)
        if job.state == JobState.SUCCEEDED:
            assert job.exit_code == 0
            assert c.job_logs(name) == f"done {name[1:]}\n"
        else:
            assert job.state == JobState.FAILED and len(job.attempts) == MAX_ATTEMPTS, "it had no attempts left"
    # No process left behind.
    time.sleep(0.5)
    assert [p for p in wrapper_pids() if p.startswith(home)] == []
