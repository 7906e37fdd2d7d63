"""How a running attempt ends, decided from what its nodes reported (pure).

Nomenclature: a *run* is one attempt in flight. Its processes report a
:class:`~corral.backends.base.ProcessExit` each. The first bad report (non-zero
exit, failed prepare, lost process), an exceeded wall clock or a terminate request
sets ``run.failure``/``run.terminating`` and the rest of the processes, on every
node, are stopped (a distributed job never hangs on a dead peer); when every
process has reported, :func:`attempt_outcome` gives the job's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.backends.base import ExitKind, ProcessExit
from corral.core.states import ENVIRONMENT_FAILED_EXIT, AttemptReason, ErrorCode, JobState
from corral.launch.plan import LaunchPlan
from corral.scheduler.policy import RunningJob


@dataclass(frozen=True)
class RetryPolicy:
    """A job's ``retry`` spec, as the outcome needs it."""

    max_attempts: int = 3
    on: frozenset[str] = frozenset({"node_failure", "preemption"})
    exit_codes: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed: the job's error code and message, and the exit code of the process, if any."""

    code: ErrorCode
    message: str
    exit_code: int | None = None


@dataclass
class Run:
    job_id: int
    attempt_id: int
    plan: LaunchPlan
    started_at: float
    deadline: float | None = None  # wall clock limit
    kill_at: float | None = None  # SIGKILL after the grace period
    terminating: bool = False
    #: Stopped to give its nodes to a waiting high-priority job (or its node was removed): back to the queue.
    preempted: bool = False
    requeue_reason: AttemptReason = AttemptReason.PREEMPTED
    failure: Failure | None = None
    #: Rank -> its report.
    exits: dict[int, ProcessExit] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy())
    #: What the queue's policy needs of a running job (see ``policy.RunningJob``).
    shape: RunningJob | None = None
    user: str = ""
    #: The upload of its outputs to volumes (``plan.upload``) was started, and its processes' reports by rank.
    uploading: bool = False
    upload_exits: dict[int, ProcessExit] = field(default_factory=dict)
    #: Outputs synced while it runs (``outputs[].sync_every``): how often, when next, and the syncs in flight
    #: (their number -> their plan and the node ranks that have reported).
    sync_every: float | None = None
    next_sync: float | None = None
    syncs: dict[int, tuple[LaunchPlan, set[int]]] = field(default_factory=dict)
    synced: int = 0

    @property
    def key(self) -> tuple[str, int]:
        return (self.plan.job_uid, self.plan.attempt)

    @property
    def processes_done(self) -> bool:
        return len(self.exits) == len(self.plan.processes)

    @property
    def awaits_upload(self) -> bool:
        """The outputs for volumes are to be uploaded and have not all been yet: every process exited 0, or the
        attempt was preempted (or its node removed) and every process exited (a last sync of what it wrote
        before it goes back to the queue)."""
        upload = self.plan.upload
        if upload is None or not self.processes_done or self.terminating:
            return False
        exits = self.exits.values()
        if self.preempted:
            wanted = all(r.kind == ExitKind.EXITED for r in exits)
        else:
            wanted = all(r.kind == ExitKind.EXITED and r.exit_code == 0 for r in exits)
        return wanted and len(self.upload_exits) < len(upload.processes)

    @property
    def done(self) -> bool:
        return self.processes_done and not self.awaits_upload

    @property
    def stopping(self) -> bool:
        return self.terminating or self.preempted or self.failure is not None


@dataclass(frozen=True)
class Outcome:
    state: JobState
    exit_code: int | None
    error_code: ErrorCode | None = None
    error_message: str | None = None
    #: Attempt reason, as shown in the attempt list.
    reason: AttemptReason = AttemptReason.EXITED


def failure_of(report: ProcessExit, plan: LaunchPlan) -> Failure | None:
    """The error a single process's report means, or None when it succeeded."""
    node_rank = next((p.node_rank for p in plan.processes if p.rank == report.rank), 0)
    where = f"rank {report.rank} on node {node_rank} ({plan.nodes[node_rank].node_name})"
    if report.kind == ExitKind.EXITED:
        if report.exit_code == 0:
            return None
        message = f"{where} exited with code {report.exit_code}"
        if report.message:
            message += f": {report.message}"
        return Failure(ErrorCode.JOB_FAILED, message, report.exit_code)
    if report.kind == ExitKind.PREPARE_FAILED:
        message = report.message or f"prepare.command failed for {where}"
        if report.exit_code == ENVIRONMENT_FAILED_EXIT:  # corral.envs.build said so
            message = message.replace("prepare.command failed", "the environment could not be built", 1)
            return Failure(ErrorCode.ENVIRONMENT_FAILED, message, report.exit_code)
        return Failure(ErrorCode.PREPARE_FAILED, message, report.exit_code)
    if report.kind == ExitKind.LAUNCH_FAILED:
        return Failure(ErrorCode.LAUNCH_FAILED, f"could not start {where}: {report.message}")
    if report.kind == ExitKind.NOT_STARTED:
        return Failure(ErrorCode.NODE_LOST, f"{where} was never started (the server stopped during launch)")
    return Failure(ErrorCode.NODE_LOST, f"{where} is gone and recorded no exit code")


def upload_failure(report: ProcessExit, upload: LaunchPlan, detail: str) -> Failure | None:
    """The error a node's upload of outputs means (None: it uploaded them all); ``detail``: its log's last line."""
    if report.kind == ExitKind.EXITED and report.exit_code == 0:
        return None
    name = upload.nodes[report.rank].node_name
    how = f"exited with code {report.exit_code}" if report.kind == ExitKind.EXITED else "could not run or vanished"
    message = f"uploading the outputs of node {report.rank} ({name}) {how}"
    return Failure(ErrorCode.OUTPUT_UPLOAD_FAILED, f"{message}: {detail}" if detail else message)


def attempt_outcome(run: Run) -> Outcome:
    """How the attempt ended, and whether the job gets another (``QUEUED``) under its retry policy."""
    reports = [run.exits[rank] for rank in sorted(run.exits)]
    if reports and all(r.kind == ExitKind.NOT_STARTED for r in reports):
        # Nothing ran: the job goes back to the queue for a fresh attempt.
        return Outcome(JobState.QUEUED, None, reason=AttemptReason.NOT_STARTED)
    first_code = next((r.exit_code for r in reports if r.exit_code is not None), None)
    if run.terminating:
        return Outcome(
            JobState.TERMINATED, first_code, ErrorCode.TERMINATED, "terminated on request", AttemptReason.TERMINATED
        )
    retry = run.retry
    number = run.plan.attempt
    left = number < retry.max_attempts
    last = f"attempt {number} of retry.max_attempts={retry.max_attempts}: no attempts left"
    finished = all(r.kind == ExitKind.EXITED and r.exit_code == 0 for r in reports)
    if run.preempted and not finished:
        reason = run.requeue_reason
        if "preemption" in retry.on and left:
            return Outcome(JobState.QUEUED, first_code, reason=reason)
        what = "preempted" if reason == AttemptReason.PREEMPTED else "its node was removed"
        return Outcome(JobState.FAILED, first_code, ErrorCode.PREEMPTED, f"{what} ({last})", reason)
    failure = run.failure
    if failure is None:
        failure = next((f for f in (failure_of(r, run.plan) for r in reports) if f is not None), None)
    if failure is None:
        return Outcome(JobState.SUCCEEDED, 0)
    code, message, exit_code = failure.code, failure.message, failure.exit_code
    reason = AttemptReason.of_failure(code)
    retryable = (
        (code == ErrorCode.NODE_LOST and "node_failure" in retry.on)
        or (code == ErrorCode.JOB_FAILED and (exit_code in retry.exit_codes or "failure" in retry.on))
        or code == ErrorCode.OUTPUT_UPLOAD_FAILED  # the job did its work: only its outputs did not get there
    )
    if retryable and left:
        return Outcome(JobState.QUEUED, exit_code, reason=reason)
    if retryable:
        message = f"{message} ({last})"
    return Outcome(JobState.FAILED, exit_code, code, message, reason=reason)
