"""``corral.AsyncClient``: the SDK for asyncio code (a notebook, a web service, an orchestration script).

    async with AsyncClient() as client:
        job = await client.create_job("job.yaml")
        async for event in client.follow_job(job.name):
            ...
        jobs = await asyncio.gather(*(client.wait_job(n) for n in names))

Every method of :class:`corral.Client` is here with the same arguments: as a coroutine, or, where the sync method
yields (``follow_job``, ``iter_jobs``, ``list_files``, ``stream_logs``, ``node_exec``), as an async iterator. The
calls run on the client's own thread pool (``max_concurrency`` at once), so waiting on jobs or streams never
blocks the event loop, and the behaviour (retries, reconnects, errors) is the sync client's, not a second copy.
Jobs it returns are bound to its sync client: use ``await client.wait_job(job.name)``, not ``job.wait()``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

from corral.client.client import Client

_DONE = object()


class AsyncClient:
    def __init__(self, *args: Any, max_concurrency: int = 64, **kwargs: Any) -> None:
        """The arguments of :class:`corral.Client`; ``max_concurrency``: calls and streams in flight at once."""
        self.sync = Client(*args, **kwargs)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="corral-async")

    async def _run(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def _iterate(self, make: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        items = await self._run(lambda: iter(make()))
        try:
            while True:
                item = await self._run(lambda: next(items, _DONE))
                if item is _DONE:
                    return
                yield item
        finally:  # an abandoned stream closes its connection
            close = getattr(items, "close", None)
            if close is not None:
                await self._run(close)

    def __getattr__(self, name: str) -> Any:
        method = getattr(Client, name, None)
        if name.startswith("_") or not callable(method):
            return getattr(self.sync, name)
        bound = getattr(self.sync, name)
        if inspect.isgeneratorfunction(method):

            @functools.wraps(method)
            def stream(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                return self._iterate(functools.partial(bound, *args, **kwargs))

            return stream

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._run(functools.partial(bound, *args, **kwargs))

        return call

    async def aclose(self) -> None:
        await self._run(self.sync.close)
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
