"""Let request handlers await a job's end without polling.

The control loop (a thread) calls :meth:`JobWaiters.notify` with the ids of jobs
that reached a terminal state; each subscribed coroutine is woken on its own
event loop. Subscribe *before* checking the job's state, so an end that happens
in between is not missed::

    with waiters.subscribe(job_id) as ended:
        if not is_terminal(current_state()):
            await ended.wait(timeout)
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Subscription:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True if the job was reported ended within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
            return True
        except TimeoutError:
            return False


class JobWaiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed: dict[int, list[Subscription]] = defaultdict(list)

    @contextmanager
    def subscribe(self, job_id: int) -> Iterator[Subscription]:
        subscription = Subscription()
        with self._lock:
            self._subscribed[job_id].append(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                entries = self._subscribed.get(job_id, [])
                if subscription in entries:
                    entries.remove(subscription)
                if not entries:
                    self._subscribed.pop(job_id, None)

    async def wait(self, job_id: int, timeout: float) -> bool:
        """Sleep until the job is reported ended or ``timeout`` passes (callers re-check the state)."""
        with self.subscribe(job_id) as subscription:
            return await subscription.wait(timeout)

    def notify(self, job_ids: list[int]) -> None:
        with self._lock:
            woken = [s for job_id in job_ids for s in self._subscribed.get(job_id, [])]
        for subscription in woken:
            subscription.loop.call_soon_threadsafe(subscription.event.set)
