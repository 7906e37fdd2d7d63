from __future__ import annotations

from dataclasses import replace

from corral.backends.base import ExitKind, ProcessExit
from corral.backends.local.wrapper import parse_exit_file
from corral.core.states import ErrorCode, JobState, can_transition
from corral.launch.plan import LaunchPlan, NodePlan, ProcessPlan
from corral.scheduler.outcome import Failure, RetryPolicy, Run, attempt_outcome


def run_with(*reports: tuple[ExitKind, int | None]) -> Run:
    nodes = tuple(
        NodePlan(
            rank=i,
            node_id=i,
            node_name=f"n{i}",
            workdir="",
            prepare_command=None,
            prepare_log="",
            processes=(ProcessPlan(rank=i, node_rank=i, command="", env={}, stdout="", stderr=""),),
        )
        for i in range(len(reports))
    )
    plan = LaunchPlan(job_uid="u", attempt=1, attempt_dir="", shared_dirs=(), nodes=nodes, grace_seconds=1)
    run = Run(job_id=1, attempt_id=1, plan=plan, started_at=0)
    for rank, (kind, code) in enumerate(reports):
        run.exits[rank] = ProcessExit("u", 1, rank, kind, code)
    return run


def test_all_zero_succeeds() -> None:
    outcome = attempt_outcome(run_with((ExitKind.EXITED, 0), (ExitKind.EXITED, 0)))
    assert (outcome.state, outcome.exit_code, outcome.error_code) == (JobState.SUCCEEDED, 0, None)


def test_non_zero_fails_naming_the_rank_and_node() -> None:
    outcome = attempt_outcome(run_with((ExitKind.EXITED, 0), (ExitKind.EXITED, 3)))
    assert outcome.state == JobState.FAILED and outcome.exit_code == 3
    assert outcome.error_code == "JobFailed"
    assert outcome.error_message == "rank 1 on node 1 (n1) exited with code 3"


def test_prepare_failure() -> None:
    outcome = attempt_outcome(
        run_with(
            (ExitKind.PREPARE_FAILED, 2),
        )
    )
    assert outcome.error_code == "PrepareFailed" and outcome.exit_code == 2


def test_first_failure_wins_over_later_kills() -> None:
    run = run_with((ExitKind.EXITED, 143), (ExitKind.EXITED, 7))
    run.failure = Failure(ErrorCode.JOB_FAILED, "node 1 exited with code 7", 7)
    outcome = attempt_outcome(run)
    assert outcome.exit_code == 7 and "node 1" in (outcome.error_message or "")


def test_terminated_and_never_started() -> None:
    run = run_with(
        (ExitKind.EXITED, 143),
    )
    run.terminating = True
    assert attempt_outcome(run).state == JobState.TERMINATED
    assert (
        attempt_outcome(
            run_with(
                (ExitKind.NOT_STARTED, None),
            )
        ).state
        == JobState.QUEUED
    )
    mixed = attempt_outcome(run_with((ExitKind.EXITED, 0), (ExitKind.NOT_STARTED, None)))
    assert mixed.state == JobState.QUEUED and mixed.reason == "NodeLost", "a node failure is retried by default"
    lost = run_with((ExitKind.LOST, None))
    lost.retry = RetryPolicy(max_attempts=1)
    assert attempt_outcome(lost).error_code == "NodeLost"


def test_exit_file_parsing() -> None:
    assert parse_exit_file("exit 0\n") == 0
    assert parse_exit_file("exit 130\n") == 130
    assert parse_exit_file("exit 0") is None  # not yet complete
    assert parse_exit_file("garbage\n") is None


def test_terminal_states_never_change() -> None:
    for terminal in (JobState.SUCCEEDED, JobState.FAILED, JobState.TERMINATED):
        assert not any(can_transition(terminal, target) for target in JobState)
    assert can_transition(JobState.RUNNING, JobState.QUEUED)
    assert not can_transition(JobState.TERMINATING, JobState.RUNNING)


def test_retry_policy() -> None:
    def outcome(kind: ExitKind, code: int | None, attempt: int, **policy: object) -> tuple[str, str | None]:
        run = run_with((kind, code))
        run.plan = replace(run.plan, attempt=attempt)
        run.retry = RetryPolicy(**policy)  # type: ignore[arg-type]
        result = attempt_outcome(run)
        return result.state.value, result.reason

    assert outcome(ExitKind.LOST, None, 1) == ("queued", "NodeLost")
    assert outcome(ExitKind.LOST, None, 3) == ("failed", "NodeLost"), "attempts ran out"
    assert outcome(ExitKind.LOST, None, 1, on=frozenset({"preemption"})) == ("failed", "NodeLost")
    assert outcome(ExitKind.EXITED, 7, 1) == ("failed", "ExitCode"), "a user's exit code fails the job"
    assert outcome(ExitKind.EXITED, 7, 1, exit_codes=frozenset({7})) == ("queued", "ExitCode")
    assert outcome(ExitKind.EXITED, 8, 1, exit_codes=frozenset({7})) == ("failed", "ExitCode")
    last = run_with((ExitKind.EXITED, 7))
    last.plan = replace(last.plan, attempt=2)
    last.retry = RetryPolicy(max_attempts=2, exit_codes=frozenset({7}))
    failed = attempt_outcome(last)
    assert (
        failed.error_message is not None
        and "attempt 2 of retry.max_attempts=2: no attempts left" in failed.error_message
    )
    preempted = run_with((ExitKind.EXITED, 143))
    preempted.preempted = True
    assert attempt_outcome(preempted).state == JobState.QUEUED
    preempted.plan = replace(preempted.plan, attempt=3)
    assert attempt_outcome(preempted).error_code == "Preempted"
