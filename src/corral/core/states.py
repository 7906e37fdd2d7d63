"""Lifecycle of jobs and nodes, and the one table of allowed job transitions.

Job::

    queued ──▶ running ──▶ succeeded | failed
       │          │  ╲
       │          │   ╲──▶ queued        (the attempt never ran / node lost; a new attempt)
       ╰──────────┴──▶ terminating ──▶ terminated
    queued ──▶ terminated | failed       (terminated before it started; cannot be launched)

Node (:data:`NODE_TRANSITIONS`)::

    preparing ──▶ idle ⇄ running          (setup done; a job placed and ended)
        │          │       │
        ╰──────────┴───────┴──▶ unusable  (setup failed; processes lost) ──▶ idle | preparing (recovered)
    any but leaving ──▶ leaving          (removed by a shrink or a preemption; it goes once its job ends)

Terminal job states never change again; a leaving node never comes back (it is deleted).
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    TERMINATING = "terminating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATED = "terminated"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TERMINATED})

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.TERMINATING, JobState.TERMINATED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TERMINATING, JobState.QUEUED}),
    JobState.TERMINATING: frozenset({JobState.TERMINATED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.TERMINATED: frozenset(),
}


def can_transition(current: JobState, target: JobState) -> bool:
    return target in JOB_TRANSITIONS[current]


class NodeState(StrEnum):
    PREPARING = "preparing"
    IDLE = "idle"
    RUNNING = "running"
    UNUSABLE = "unusable"
    LEAVING = "leaving"


NODE_TRANSITIONS: dict[NodeState, frozenset[NodeState]] = {
    NodeState.PREPARING: frozenset({NodeState.IDLE, NodeState.UNUSABLE, NodeState.LEAVING}),
    NodeState.IDLE: frozenset({NodeState.RUNNING, NodeState.UNUSABLE, NodeState.LEAVING}),
    NodeState.RUNNING: frozenset({NodeState.IDLE, NodeState.UNUSABLE, NodeState.LEAVING}),
    NodeState.UNUSABLE: frozenset({NodeState.IDLE, NodeState.PREPARING, NodeState.LEAVING}),
    NodeState.LEAVING: frozenset(),
}


def node_sources(target: NodeState) -> frozenset[NodeState]:
    """The states a node may reach ``target`` from."""
    return frozenset(s for s, targets in NODE_TRANSITIONS.items() if target in targets)


class ErrorCode(StrEnum):
    """Codes of ``Job.error``: why a job did not succeed."""

    JOB_FAILED = "JobFailed"
    PREPARE_FAILED = "PrepareFailed"
    WALL_CLOCK_EXCEEDED = "WallClockExceeded"
    NODE_LOST = "NodeLost"
    PREEMPTED = "Preempted"
    TERMINATED = "Terminated"
    LAUNCH_FAILED = "LaunchFailed"
    #: The job's stored spec does not load any more (stored by an older version, or corrupted).
    INVALID_SPEC = "InvalidSpec"
    #: Its processes succeeded, but its outputs did not all reach their volume (retried like a lost node).
    OUTPUT_UPLOAD_FAILED = "OutputUploadFailed"
    #: The job's environment could not be built on a node (uv's message in the prepare log).
    ENVIRONMENT_FAILED = "EnvironmentFailed"
    #: A sweep's trial stopped early by its pruner (the message says why); it ends terminated, not retried.
    PRUNED = "Pruned"


class AttemptReason(StrEnum):
    """Why an attempt ended (``Attempt.reason``), shown in the attempt list; a failure's is its error code."""

    EXITED = "Exited"  # every process exited 0
    EXIT_CODE = "ExitCode"  # a process exited non-zero (JobFailed)
    NOT_STARTED = "NotStarted"  # nothing ran: the server stopped during the launch
    TERMINATED = "Terminated"
    PREEMPTED = "Preempted"  # its nodes went to a waiting high-priority job, or the node was evicted
    NODE_REMOVED = "NodeRemoved"  # a shrink of the cluster took its node
    NODE_LOST = "NodeLost"
    PREPARE_FAILED = "PrepareFailed"
    WALL_CLOCK_EXCEEDED = "WallClockExceeded"
    LAUNCH_FAILED = "LaunchFailed"
    INVALID_SPEC = "InvalidSpec"
    OUTPUT_UPLOAD_FAILED = "OutputUploadFailed"
    ENVIRONMENT_FAILED = "EnvironmentFailed"
    PRUNED = "Pruned"

    @classmethod
    def of_failure(cls, code: ErrorCode) -> AttemptReason:
        return cls.EXIT_CODE if code == ErrorCode.JOB_FAILED else cls(code.value)


#: The exit code of a node's prepare that says "its environment could not be built" (corral.envs.build): the
#: attempt ends EnvironmentFailed.
ENVIRONMENT_FAILED_EXIT = 86

#: ``Job.reason`` of a running job whose processes have all exited 0 while its outputs go to their volumes.
UPLOADING_OUTPUTS = "UploadingOutputs"

#: Reasons set while an attempt still runs: its job goes back to the queue when it ends.
REQUEUE_REASONS = frozenset({AttemptReason.PREEMPTED, AttemptReason.NODE_REMOVED})
