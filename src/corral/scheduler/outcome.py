"""How a running attempt ends, decided from what its nodes reported (pure).

Nomenclature: a *run* is one attempt in flight. Its nodes report a
:class:`~corral.backends.base.NodeExit` each. The first bad report (non-zero
exit, failed prepare, lost node), an exceeded wall clock or a terminate request
sets ``run.failure``/``run.terminating`` and the rest of the nodes are stopped;
when every node has reported, :func:`attempt_outcome` gives the job's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.backends.base import ExitKind, NodeExit
from corral.core.states import ErrorCode, JobState
from corral.launch.plan import LaunchPlan


@dataclass
class Run:
    job_id: int
    attempt_id: int
    plan: LaunchPlan
    started_at: float
    deadline: float | None = None  # wall clock limit
    kill_at: float | None = None  # SIGKILL after the grace period
    terminating: bool = False
    failure: tuple[str, str, int | None] | None = None  # (code, message, exit code)
    exits: dict[int, NodeExit] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return (self.plan.job_uid, self.plan.attempt)

    @property
    def done(self) -> bool:
        return len(self.exits) == len(self.plan.nodes)

    @property
    def stopping(self) -> bool:
        return self.terminating or self.failure is not None


@dataclass(frozen=True)
class Outcome:
    state: JobState
    exit_code: int | None
    error_code: str | None = None
    error_message: str | None = None
    #: Attempt reason, as shown in the attempt list.
    reason: str = "Exited"


def failure_of(report: NodeExit) -> tuple[str, str, int | None] | None:
    """The error a single node's report means, or None when it succeeded."""
    node = f"node {report.rank}"
    if report.kind == ExitKind.EXITED:
        if report.exit_code == 0:
            return None
        return (ErrorCode.JOB_FAILED, f"{node} exited with code {report.exit_code}", report.exit_code)
    if report.kind == ExitKind.PREPARE_FAILED:
        message = f"prepare.command failed on {node} with exit code {report.exit_code}"
        return (ErrorCode.PREPARE_FAILED, message, report.exit_code)
    if report.kind == ExitKind.LAUNCH_FAILED:
        return (ErrorCode.LAUNCH_FAILED, f"could not start {node}: {report.message}", None)
    if report.kind == ExitKind.NOT_STARTED:
        return (ErrorCode.NODE_LOST, f"{node} was never started (the server stopped during launch)", None)
    return (ErrorCode.NODE_LOST, f"{node}'s processes are gone and recorded no exit code", None)


def attempt_outcome(run: Run) -> Outcome:
    reports = [run.exits[rank] for rank in sorted(run.exits)]
    if reports and all(r.kind == ExitKind.NOT_STARTED for r in reports):
        # Nothing ran: the job goes back to the queue for a fresh attempt.
        return Outcome(JobState.QUEUED, None, reason="NotStarted")
    first_code = next((r.exit_code for r in reports if r.exit_code is not None), None)
    if run.terminating:
        return Outcome(
            JobState.TERMINATED,
            first_code,
            ErrorCode.TERMINATED,
            "terminated on request",
            reason="Terminated",
        )
    if run.failure is not None:
        code, message, exit_code = run.failure
        return Outcome(JobState.FAILED, exit_code, code, message, reason=code)
    for report in reports:
        failure = failure_of(report)
        if failure is not None:
            return Outcome(JobState.FAILED, failure[2], failure[0], failure[1], reason=failure[0])
    return Outcome(JobState.SUCCEEDED, 0, reason="Exited")
