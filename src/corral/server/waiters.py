"""Let request handlers await a job's end without polling.

The control loop (a thread) calls :meth:`JobWaiters.notify` with the ids of jobs
that reached a terminal state; each awaiting coroutine is woken on its own
event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class JobWaiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(list)

    async def wait(self, job_id: int, timeout: float) -> bool:
        """True if the job was reported ended within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiting[job_id].append(entry)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                entries = self._waiting.get(job_id, [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._waiting.pop(job_id, None)

    def notify(self, job_ids: list[int]) -> None:
        with self._lock:
            woken = [entry for job_id in job_ids for entry in self._waiting.get(job_id, [])]
        for loop, event in woken:
            loop.call_soon_threadsafe(event.set)
