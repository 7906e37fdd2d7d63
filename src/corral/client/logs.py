"""Reading a job's logs: as they are now, streamed, or followed live across every rank."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from corral.client.http import ClientBase, raise_for_error
from corral.core.errors import ServerUnavailable
from corral.core.models import FollowEvent

#: The events of following a job (the server also sends keep-alive pings).
FOLLOW_EVENTS = ("state", "log", "attempt", "end")


class LogsMixin(ClientBase):
    def job_logs(
        self,
        name: str,
        *,
        rank: int = 0,
        stream: str = "stdout",
        attempt: int | None = None,
        tail: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> str:
        """A rank's log of the latest attempt, or of ``attempt``; with ``tail``, only its last lines."""
        return b"".join(
            self.stream_logs(
                name, rank=rank, stream=stream, attempt=attempt, tail=tail, experiment=experiment, workspace=workspace
            )
        ).decode(errors="replace")

    def stream_logs(
        self,
        name: str,
        *,
        rank: int = 0,
        stream: str = "stdout",
        attempt: int | None = None,
        tail: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[bytes]:
        """A rank's log as it is now, in chunks as they arrive (a log of any size, in little memory)."""
        params: dict[str, str | int] = {"rank": rank, "stream": stream}
        if attempt is not None:
            params["attempt"] = attempt
        if tail is not None:
            params["tail"] = tail
        path = self._job(name, experiment, workspace) + "/logs"
        yield from self._stream(path, params)

    def follow_logs(
        self,
        name: str,
        *,
        rank: int = 0,
        attempt: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[tuple[str, str]]:
        """One rank's lines as ``(stream, line)`` as the job writes them (``("attempt", n)`` when a new attempt
        starts), then ``("end", '{"state": ...}')``. :meth:`follow_job` gives every rank and the job's state."""
        for event in self.follow_job(
            name, ranks=str(rank), attempt=attempt, experiment=experiment, workspace=workspace
        ):
            if event.kind == "log":
                for line in event.lines:
                    yield event.stream or "stdout", line
            elif event.kind == "attempt":
                yield "attempt", str(event.attempt)
            elif event.kind == "end":
                yield "end", json.dumps({"state": event.state, "exit_code": event.exit_code})

    def follow_job(
        self,
        name: str,
        *,
        ranks: str = "all",
        streams: str = "stdout,stderr",
        attempt: int | None = None,
        tail: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
        reconnect_for: float = 120.0,
    ) -> Iterator[FollowEvent]:
        """The job's state and the lines of ``ranks`` (``all``, or ``0,3``) as they come, until its end: typed
        :class:`FollowEvent` objects. A lost connection (a server restart) is taken up again where it stopped, for
        up to ``reconnect_for`` seconds, neither repeating nor losing a line. ``tail``: start each stream at
        its last lines instead of its first."""
        path = self._job(name, experiment, workspace) + "/logs"
        params: dict[str, str | int] = {"follow": "true", "ranks": ranks, "streams": streams}
        if attempt is not None:
            params["attempt"] = attempt
        if tail is not None:
            params["tail"] = tail
        cursor = _Cursor()
        lost_since: float | None = None
        while True:
            headers = {"Last-Event-ID": str(cursor)} if cursor.attempt else {}
            try:
                with connect_sse(
                    self._http, "GET", path, params=params, headers=headers, timeout=httpx.Timeout(30, read=None)
                ) as source:
                    if source.response.status_code >= 500:  # a server going down or starting: try again
                        raise httpx.TransportError(f"HTTP {source.response.status_code}")
                    raise_for_error(source.response, "cannot follow the job")
                    for sse in source.iter_sse():
                        lost_since = None
                        if sse.event not in FOLLOW_EVENTS:  # a keep-alive ping
                            continue
                        if sse.id:
                            cursor.add(sse.id)
                        event = FollowEvent.model_validate({"kind": sse.event, **json.loads(sse.data)})
                        yield event
                        if event.kind == "end":
                            return
            except (httpx.TransportError, SSEError) as exc:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > reconnect_for:
                    raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None
                time.sleep(1.0)
            # The stream ended without an end event (the server stopped): go on from the cursor.

    def _events(self, method: str, path: str, *, last: str, **kwargs: Any) -> Iterator[tuple[str, str]]:
        """Server-Sent Events as ``(event, data)``, until the ``last`` event."""
        try:
            with connect_sse(self._http, method, path, timeout=httpx.Timeout(30, read=None), **kwargs) as source:
                raise_for_error(source.response)
                for sse in source.iter_sse():
                    if sse.event == "ping":  # keep-alive
                        continue
                    yield sse.event, sse.data
                    if sse.event == last:
                        return
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None


class _Cursor:
    """Where a follow stands: the union of the events' ids (each names one stream's offset) since the latest
    attempt began, sent back as one cursor on a reconnect."""

    def __init__(self) -> None:
        self.attempt = ""
        self.parts: dict[str, str] = {}

    def add(self, event_id: str) -> None:
        attempt, _, parts = event_id.partition("/")
        if attempt != self.attempt:
            self.attempt, self.parts = attempt, {}
        for part in filter(None, parts.split(",")):
            stream = part[: len(part.rstrip("0123456789"))]  # "3o" of "3o1024"
            self.parts[stream] = part

    def __str__(self) -> str:
        return f"{self.attempt}/" + ",".join(self.parts.values())
