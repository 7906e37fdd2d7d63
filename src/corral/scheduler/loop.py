"""The control loop: the only place where jobs start, end and get signalled.

One thread. It sleeps until something happens — a submission, a node's exit
(pushed by the backend's watcher), a terminate request — or until the next
deadline (wall clock, kill after grace), with a slow safety tick besides. Each
pass applies everything that happened in **one** database transaction, then
launches what it placed. Nothing lives only in memory: on start,
:meth:`Controller.recover` rebuilds every run from the database and asks the
backend what became of its processes while no server was watching.

Ordering for crash safety: a job is marked running (and its attempt written)
*before* its processes start; a restart that finds an attempt none of whose
nodes ever started puts the job back in the queue instead of running it twice.

This module keeps the thread, the pass and the runs in flight; the pass's parts live beside it:
``policy`` (who goes where), ``runs`` (loading and committing placements, building runs), ``ending``
(committing ended attempts), ``lifecycle`` (nodes), ``recovery`` (after a restart), ``liveness`` (health).
It is past 450 lines because a run's own afterwards stay with the runs in flight: the upload of its outputs once
its processes have ended, and the syncs while they run, are started, reported and signalled by the same timers
and reports as its processes (split off, they would need the loop's state passed back and forth).
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from corral.backends.base import Backends, ExitKind, ProcessExit
from corral.core.states import AttemptReason, ErrorCode, JobState
from corral.launch.common import sync_plan, upload_number
from corral.launch.planner import ports_needed
from corral.scheduler.ending import fail_unlaunchable, finish_runs, mark_uploading
from corral.scheduler.lifecycle import NodeLifecycle
from corral.scheduler.liveness import Liveness
from corral.scheduler.nodes import lock_clusters
from corral.scheduler.outcome import Failure, Run, failure_of, upload_failure
from corral.scheduler.plans import PlacedNode
from corral.scheduler.policy import (
    CLUSTER_SCALING,
    RESOURCES,
    QueuedJob,
    Snapshot,
    schedule,
)
from corral.scheduler.ports import PortAllocator
from corral.scheduler.queue_view import QueueView
from corral.scheduler.recovery import rebuild_runs, rebuild_usage
from corral.scheduler.runs import Placed, Start, commit_placements, free_nodes, load_for_launch, new_run, queued_again
from corral.store.db import Database
from corral.store.tables import AttemptRow, JobRow
from corral.store.transitions import Move, transition_jobs

log = logging.getLogger(__name__)


class Controller:
    def __init__(
        self,
        *,
        db: Database,
        backends: Backends,
        on_jobs_ended: Callable[[list[int]], None] = lambda ids: None,
        tick_seconds: float = 5.0,
        coalesce_seconds: float = 0.005,
        ports: PortAllocator | None = None,
        fairshare_half_life: float = 7 * 86400.0,
    ) -> None:
        self._db = db
        #: Clusters' nodes: setups, resizes, automatic scale, evictions.
        self._nodes = NodeLifecycle(backends)
        #: The queue as the policy sees it (the database stays the truth), with clusters, quotas and usage.
        self._queue = QueueView(self._nodes, fairshare_half_life)
        self._ports = ports or PortAllocator()
        #: Ports given out by the pass in progress: released again if its transaction fails.
        self._pass_ports: list[int] = []
        #: Jobs the pass in progress failed without running them (their waiters are told once it commits).
        self._failed_in_pass: list[int] = []
        self._backend = backends.executor
        self._provider = backends.nodes
        self._on_jobs_ended = on_jobs_ended
        self._tick = tick_seconds
        self._liveness = Liveness(tick_seconds)
        self._coalesce = coalesce_seconds
        self._inbox: deque[ProcessExit] = deque()
        self._terminate_requests: deque[int] = deque()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._runs: dict[tuple[str, int], Run] = {}
        self._runs_by_job: dict[int, Run] = {}
        self._timers: list[tuple[float, tuple[str, int]]] = []
        self._thread: threading.Thread | None = None
        backends.executor.set_listener(self._process_exited)

    # ------------------------------------------------------------ outside world

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._run_forever, name="corral-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def health(self) -> dict[str, object]:
        """The loop's liveness: ``status`` ok, stuck, failing or stopped, with when it last passed."""
        return self._liveness.report(alive=self._thread is not None and self._thread.is_alive())

    def jobs_submitted(self, jobs: list[QueuedJob]) -> None:
        """Jobs were committed to the queue (given whole: the loop need not read them back)."""
        for job in jobs:
            self._queue.submitted(job)
        self._wake.set()

    def job_dequeued(self, job_id: int) -> None:
        """A queued job left the queue without the loop (terminated by a request)."""
        self._queue.dequeued(job_id)
        self._wake.set()

    def policy_changed(self) -> None:
        """A cluster (its size included) or a workspace quota changed: reload them before the next placement."""
        self._queue.mark_stale()
        self._nodes.request_reconcile()
        self._wake.set()

    def preempt_node(self, node_id: int) -> None:
        """Evict a node of a low-priority cluster: notice (SIGTERM) to its job, the grace period, removal.

        The job goes back to the queue (reason ``Preempted``); the cluster, still at its target count, gets a
        new node in its place.
        """
        self._nodes.evictions.append(node_id)
        self._wake.set()

    def request_terminate(self, job_id: int) -> None:
        """A running job was moved to ``terminating``: stop its processes."""
        self._terminate_requests.append(job_id)
        self._wake.set()

    def _process_exited(self, report: ProcessExit) -> None:  # watcher thread
        self._inbox.append(report)
        self._wake.set()

    # ------------------------------------------------------------ loop

    def _run_forever(self) -> None:
        while not self._stopped.is_set():
            timeout = self._tick
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.time()))
            if self._wake.wait(timeout) and len(self._runs) > len(self._inbox):
                # Other runs are in flight: let the events of the next milliseconds join this pass (one
                # transaction for many jobs). On an idle loop a lone job's submission or end goes at once.
                time.sleep(self._coalesce)
            self._wake.clear()
            if self._stopped.is_set():
                break
            try:
                self.run_once()
            except Exception as exc:  # keep scheduling; the next pass retries from the database
                self._liveness.failed(exc)
                log.exception("control loop pass failed (%d in a row)", self._liveness.failures)
                time.sleep(0.5)
            else:
                self._liveness.passed()

    def run_once(self) -> None:
        reports = []
        while self._inbox:
            reports.append(self._inbox.popleft())
        terminations = []
        while self._terminate_requests:
            terminations.append(self._terminate_requests.popleft())
        self._queue.drain_dequeued()
        now = time.time()
        # Signals and bookkeeping first, outside the transaction: it holds the database's one write lock,
        # which every submission waits for.
        for job_id in terminations:
            run = self._runs_by_job.get(job_id)
            if run is not None and not run.terminating:
                run.terminating = True
                self._stop_run(run, now)
        for report in reports:
            self._apply_report(report, now)
        self._fire_timers(now)
        # (after any sync in flight: it must not land older bytes over the final upload's)
        uploads = [r for r in self._runs.values() if r.awaits_upload and not r.uploading and not r.syncs]
        for run in uploads:
            assert run.plan.upload is not None
            run.uploading = True
            self._backend.launch(run.plan.upload)
        done = [r for r in self._runs.values() if r.done]
        self._pass_ports, self._failed_in_pass = [], []
        try:
            with self._db.write() as session:
                lock_clusters(session)
                if uploads:
                    mark_uploading(session, uploads, now)
                requeued = self._finish(session, done, now) if done else []
                self._queue.load_policy(session)
                # This pass's submissions are taken in once, here: the automatic scale's demand and the
                # placement see the same jobs (one arriving mid-pass waits for the next, which it wakes).
                self._queue.refresh(session, now, self._runs_by_job)
                if self._queue.doomed:  # queued on a cluster whose stored spec does not load
                    self._failed_in_pass.extend(fail_unlaunchable(session, self._queue.take_doomed(), now))
                removed = self._step_nodes(session, now)
                starts = self._schedule(session, now)
        except BaseException:
            self._ports.release(self._pass_ports)
            self.policy_changed()  # what the failed pass took in hand is done again from the database
            raise
        for run in done:  # only once committed: a failed pass must find its runs again
            del self._runs[run.key]
            self._runs_by_job.pop(run.job_id, None)
            self._backend.forget(run.plan)
            if run.uploading and run.plan.upload is not None:
                self._backend.forget(run.plan.upload)
            for plan, _ in run.syncs.values():
                self._backend.forget(plan)
            self._ports.release(run.plan.ports)
            if run.shape is not None:
                self._queue.usage.add(run.user, run.shape.node_count * max(0.0, now - run.started_at), now)
        for workspace, cluster, node in removed:
            self._provider.remove_node_files(workspace, cluster, node)
        self._nodes.launch_pending()
        for run in requeued:  # back in the queue: the next pass sees them
            self._queue.submitted(queued_again(run, now))
        if requeued or self._failed_in_pass:  # nodes the policy gave to them are free for the next pass
            self._wake.set()
        if done or self._failed_in_pass:
            self._on_jobs_ended([r.job_id for r in done] + self._failed_in_pass)
        for placed, attempt_id, nodes, ports in starts:
            self._backend.launch(self._run_for(placed, attempt_id, nodes, ports, started_at=now).plan)

    # ------------------------------------------------------------ runs

    def _track(self, run: Run) -> None:
        self._runs[run.key] = run
        self._runs_by_job[run.job_id] = run
        for when in (run.deadline, run.kill_at, run.next_sync):
            if when is not None:
                heapq.heappush(self._timers, (when, run.key))

    def _stop_run(self, run: Run, now: float) -> None:
        """SIGTERM every node still running; SIGKILL follows after the grace period."""
        self._backend.signal(run.plan, kill=False)
        if run.terminating and run.uploading and run.plan.upload is not None:  # only a terminate stops an upload
            self._backend.signal(run.plan.upload, kill=False)
        run.kill_at = now + run.plan.grace_seconds
        heapq.heappush(self._timers, (run.kill_at, run.key))

    def _apply_report(self, report: ProcessExit, now: float) -> None:
        if self._nodes.take_report(report):
            return
        if report.attempt < 0:  # a node's upload of the outputs (the plan's ``upload``)
            self._apply_upload_report(report, now)
            return
        run = self._runs.get((report.job_uid, report.attempt))
        if run is None or report.rank in run.exits:
            return
        run.exits[report.rank] = report
        failure = failure_of(report, run.plan)
        if failure is not None and failure.code == ErrorCode.ENVIRONMENT_FAILED:  # with uv's word for why
            node = re.search(r"on node (\d+)", failure.message)
            where = run.plan.nodes[int(node.group(1)) if node else 0]
            log_file = where.environment_log or where.prepare_log
            failure = replace(failure, message=f"{failure.message}: {last_line(log_file, 600)}")
            if run.failure is None and run.done:  # no process started (the backend ends the other prepares)
                run.failure = failure
        if failure is not None and not run.stopping and not run.done:
            run.failure = failure
            self._stop_run(run, now)

    def _apply_upload_report(self, report: ProcessExit, now: float) -> None:
        attempt, number = upload_number(report.attempt)
        run = self._runs.get((report.job_uid, attempt))
        upload = run.plan.upload if run is not None else None
        if run is not None and number:
            self._sync_reported(run, number, report)
            return
        if run is None or upload is None or report.rank in run.upload_exits:
            return
        run.upload_exits[report.rank] = report
        failure = upload_failure(report, upload, last_line(upload.processes[report.rank].stderr))
        if failure is not None and run.failure is None:
            run.failure = failure
            self._backend.signal(upload, kill=False)  # the attempt has failed: the other nodes need not go on

    def _sync(self, run: Run, now: float) -> None:
        """Upload what the nodes have written so far (``outputs[].sync_every``); one sync at a time, none once the
        processes have ended (the final upload follows)."""
        assert run.sync_every is not None
        run.next_sync = now + run.sync_every
        heapq.heappush(self._timers, (run.next_sync, run.key))
        if run.plan.upload is None or run.stopping or run.processes_done or run.syncs:
            return
        run.synced += 1
        plan = sync_plan(run.plan.upload, run.synced)
        run.syncs[run.synced] = (plan, set())
        self._backend.launch(plan)

    def _sync_reported(self, run: Run, number: int, report: ProcessExit) -> None:
        if number not in run.syncs:
            return
        plan, reported = run.syncs[number]
        reported.add(report.rank)
        if report.kind != ExitKind.EXITED or report.exit_code != 0:
            log.warning("job %s: sync %d of its outputs failed on node %d: %s", report.job_uid, number, report.rank,
                        last_line(plan.processes[report.rank].stderr))  # fmt: skip
        if len(reported) == len(plan.processes):
            del run.syncs[number]
            self._backend.forget(plan)
            self._wake.set()  # a final upload may have waited for it

    def _fire_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, key = heapq.heappop(self._timers)
            run = self._runs.get(key)
            if run is None or run.done:
                continue
            if run.next_sync is not None and run.next_sync <= now:
                self._sync(run, now)
            if run.kill_at is not None and run.kill_at <= now:
                self._backend.signal(run.plan, kill=True)
                if run.terminating and run.uploading and run.plan.upload is not None:
                    self._backend.signal(run.plan.upload, kill=True)
            elif run.deadline is not None and run.deadline <= now and not run.stopping and not run.processes_done:
                # (an upload of outputs, once the processes are done, does not count against the wall clock)
                limit = run.deadline - run.started_at
                run.failure = Failure(ErrorCode.WALL_CLOCK_EXCEEDED, f"ran past limits.max_wall_clock ({limit:g}s)")
                self._stop_run(run, now)

    def _finish(self, session: Session, runs: list[Run], now: float) -> list[Run]:
        """Commit how the runs ended; the runs whose jobs went back to the queue."""
        requeued = finish_runs(session, runs, now, nodes_leaving=bool(self._nodes.leaving))
        lost = any(e.kind == ExitKind.LOST for run in runs for e in run.exits.values())
        if self._nodes.leaving or lost:  # a node to let go, or a lost one that may have no machine any more
            self._nodes.request_reconcile()
        return requeued

    # ------------------------------------------------------------ scheduling

    def _schedule(self, session: Session, now: float) -> list[Start]:
        """Run the queue's policy: record why jobs wait, preempt, commit the placed jobs running, and return
        what :meth:`_run_for` needs for each."""
        if not self._queue.jobs:
            return []
        shapes = [
            replace(r.shape, preempting=r.preempted) if r.preempted else r.shape
            for r in self._runs.values()
            if r.shape is not None
        ]
        running_usage = [
            (r.user, r.shape.node_count * max(0.0, now - r.started_at)) for r in self._runs.values() if r.shape
        ]
        decision = schedule(
            Snapshot(
                queued=list(self._queue.jobs.values()),
                free_nodes=free_nodes(session),
                running=shapes,
                usage=self._queue.usage.snapshot(now, running_usage),
                quotas=self._queue.quotas,
                preempt_after=self._queue.preempt_after(),
                now=now,
            )
        )
        if self._nodes.scaling_up:
            for job_id, reason in decision.reasons.items():
                if reason == RESOURCES and self._queue.jobs[job_id].cluster_id in self._nodes.scaling_up:
                    decision.reasons[job_id] = CLUSTER_SCALING
        self._queue.write_reasons(session, decision.reasons)
        for job_id in decision.preempt:
            run = self._runs_by_job.get(job_id)
            if run is not None and not run.stopping:
                log.info("preempting job %s for a waiting high-priority job", job_id)
                self._requeue_run(session, run, AttemptReason.PREEMPTED, now)
        placements = decision.placements
        if not placements:
            return []
        # Load what the placed jobs need in a few queries, and write in batches: not a few statements per job.
        placed, broken = load_for_launch(session, [p.job_id for p in placements])
        self._failed_in_pass.extend(fail_unlaunchable(session, broken, now))
        for p in placements:
            if p.job_id not in placed:  # deleted meanwhile, or failed because it cannot be launched
                self._queue.remove(p.job_id)
        ports = self._reserve_ports(placed)
        placements = [p for p in placements if p.job_id in ports]
        starts, moved = commit_placements(session, placements, placed, ports, now)
        for p in placements:
            # Placed, or no longer queued (terminated, deleted): out of the queue either way.
            self._queue.remove(p.job_id)
            if p.job_id in ports and p.job_id not in moved:
                self._ports.release(ports[p.job_id])
        return starts

    def _step_nodes(self, session: Session, now: float) -> list[tuple[str, str, str]]:
        """The nodes' pass (setups ended, automatic scale, evictions, resizes); stop the runs it says to."""
        demand: dict[int, int] = {}
        if self._nodes.auto:  # only automatic clusters need it: not a walk over the queue on every pass
            # The pass's submissions are in already: a job sent to a cluster at 0 nodes makes it grow now (and
            # waits as ClusterScaling), not a pass later as Resources.
            for job in self._queue.jobs.values():
                if job.cluster_id in self._nodes.auto:
                    demand[job.cluster_id] = demand.get(job.cluster_id, 0) + job.node_count
        actions = self._nodes.step(session, now, demand)
        if actions.terminate:
            rows = session.scalars(select(JobRow).where(JobRow.id.in_(actions.terminate)))
            why, changes = "its node was removed by a resize", {"terminate_requested_at": now}
            moves = [Move(job, JobState.TERMINATING, AttemptReason.NODE_REMOVED, why, changes) for job in rows]
            for move in transition_jobs(session, moves, at=now):
                run = self._runs_by_job.get(move.job.id)
                if run is not None and not run.stopping:
                    run.terminating = True
                    self._stop_run(run, now)
        for job_id, reason in actions.requeue:
            run = self._runs_by_job.get(job_id)
            if run is not None and not run.stopping:
                self._requeue_run(session, run, reason, now)
        if actions.changed:
            self._queue.mark_stale()
        return actions.removed

    def _requeue_run(self, session: Session, run: Run, reason: AttemptReason, now: float) -> None:
        """Stop a run to put its job back in the queue. The reason is on its attempt at once: a restart
        before the processes end still requeues the job instead of failing it."""
        run.preempted, run.requeue_reason = True, reason
        session.execute(update(AttemptRow).where(AttemptRow.id == run.attempt_id).values(reason=reason))
        self._stop_run(run, now)

    def _reserve_ports(self, placed: dict[int, Placed]) -> dict[int, tuple[int, ...]]:
        """Ports for each placed job that needs some; a job for which none are free now stays queued."""
        given: dict[int, tuple[int, ...]] = {}
        for job_id, p in placed.items():
            block = self._ports.allocate(ports_needed(p.spec, p.cluster.parsed.node.gpus))
            if block is None:
                log.warning("no free block of ports for job %s; it waits for the next pass", p.job.name)
                continue
            self._pass_ports.extend(block)
            given[job_id] = block
        return given

    def _run_for(
        self, placed: Placed, attempt_id: int, nodes: list[PlacedNode], ports: tuple[int, ...], *, started_at: float
    ) -> Run:
        """Track the run of the job's current attempt."""
        run = new_run(placed, attempt_id, nodes, ports, started_at=started_at, provider=self._provider)
        self._track(run)
        return run

    # ------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Rebuild runs of jobs that were running when the last server stopped, and the users' usage."""
        now = time.time()
        with self._db.write() as session:
            rebuild_usage(session, self._queue.usage, now)
            runs, unplanned = rebuild_runs(session, now, provider=self._provider, ports=self._ports)
            self._nodes.recover(session)
        for attempt in unplanned:  # failed above: its processes, which nothing would watch now, are ended
            self._backend.end_unplanned(attempt.job_uid, attempt.attempt, attempt.ips)
        for run in runs:
            self._track(run)
            self._backend.recover(run.plan)
            if run.terminating or run.preempted:
                self._backend.signal(run.plan, kill=False)
        log.info("recovered %d running jobs", len(runs))


def last_line(path: str, limit: int = 300) -> str:
    """The last line a log holds (its last 4 KiB read), cut to ``limit`` characters; '' when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].removeprefix("corral: ")[:limit] if lines else ""
