"""Per-user limits on submissions: how many jobs one user may have queued, and how fast one may submit.

One user's burst must not fill the queue for everyone or take the server's time from other users' reads, so a
submission past a limit is refused with ``TooManyRequests`` (HTTP 429 with ``Retry-After``) before any work is
done for it. The rate is a token bucket per user (``submit_rate`` a second, bursts of ``submit_burst``). The
queued count is read from the database at most once a second (one grouped count) and counts the submissions
admitted since: it may overcount for that second (a job that left the queue meanwhile), never undercount.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from corral.core.errors import TooLarge, TooManyRequests
from corral.core.states import JobState
from corral.store.db import Database
from corral.store.tables import JobRow

#: Seconds between reloads of the per-user queued counts.
COUNTS_MAX_AGE = 1.0


@dataclass
class _Bucket:
    tokens: float
    at: float


class Admission:
    def __init__(self, *, rate: float, burst: int, max_queued: int) -> None:
        self._rate = rate
        self._burst = burst
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}
        self._queued: dict[str, int] = {}
        self._counted_at = float("-inf")

    def admit(self, db: Database, *, user: str, count: int = 1) -> None:
        """Count ``count`` submissions of ``user`` (all or none), or raise TooManyRequests saying which limit and
        when to retry."""
        if self._rate and count > self._burst:  # it would never pass
            raise TooLarge(
                f"a batch of {count} jobs is more than the {self._burst} a user may submit at once "
                "(server setting submit_burst)"
            )
        now = time.monotonic()
        if self._max_queued:
            if now - self._counted_at > COUNTS_MAX_AGE:
                counts = self._count_queued(db)
                with self._lock:
                    self._queued, self._counted_at = counts, now
            with self._lock:
                if self._queued.get(user, 0) + count > self._max_queued:
                    queued = self._queued.get(user, 0)
                    raise TooManyRequests(
                        f"user {user!r} has {queued} jobs queued{f' and submits {count} more' if count > 1 else ''};"
                        f" {self._max_queued} is the most one user may have (server setting "
                        "max_queued_jobs_per_user); submit more as they start",
                        retry_after=5.0,
                    )
        if self._rate:
            with self._lock:
                bucket = self._buckets.setdefault(user, _Bucket(float(self._burst), now))
                bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.at) * self._rate)
                bucket.at = now
                if bucket.tokens < count:
                    raise TooManyRequests(
                        f"user {user!r} submits faster than {self._rate:g} jobs a second on average "
                        "(server setting submit_rate)",
                        retry_after=(count - bucket.tokens) / self._rate,
                    )
                bucket.tokens -= count
        if self._max_queued:
            with self._lock:
                self._queued[user] = self._queued.get(user, 0) + count

    @staticmethod
    def _count_queued(db: Database) -> dict[str, int]:
        with db.read() as session:
            rows = session.execute(
                select(JobRow.submitted_by, func.count())
                .where(JobRow.state == JobState.QUEUED.value)
                .group_by(JobRow.submitted_by)
            )
            return {user: int(count) for user, count in rows}
