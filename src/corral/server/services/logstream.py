"""Follow a job's logs as Server-Sent Events until the job ends.

Events: ``stdout`` and ``stderr`` (one per line, ``data`` is the line), then one
``end`` whose data is ``{"state": ..., "exit_code": ...}``. Files are read from
where the last read stopped; between reads the stream sleeps on the job's
end-waiter, so the end is sent as soon as the job ends.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator
from pathlib import Path

from corral.core.states import JobState
from corral.server.context import ServerContext
from corral.server.services.lookup import job_row
from corral.server.services.outputs import CHUNK_BYTES, log_file, mask

POLL_SECONDS = 0.25
STREAMS = ("stdout", "stderr")


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


class _Tail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""
        #: A character cut in two by a chunk's end is decoded whole with the next chunk.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read_lines(self, *, final: bool) -> tuple[list[str], bool]:
        """The whole lines written since the last read (at most one chunk's worth), and whether more is
        already there to read. With ``final``, the last line counts even without its newline."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read(CHUNK_BYTES)
        except FileNotFoundError:
            chunk = b""
        self.offset += len(chunk)
        more = len(chunk) == CHUNK_BYTES
        text = self.partial + self._decoder.decode(chunk, final=final and not more)
        lines = text.split("\n")
        self.partial = lines.pop()
        if final and not more and self.partial:
            lines.append(self.partial)
            self.partial = ""
        return lines, more


async def follow_logs(
    ctx: ServerContext, *, workspace: str, experiment: str, job: str, rank: int, attempt: int | None = None
) -> AsyncIterator[str]:
    """Without ``attempt``, follow the latest one: when the job is requeued, an ``attempt`` event (its
    number) comes and the new attempt's lines follow."""

    def _load(number: int | None) -> tuple[int, dict[str, Path], list[str]]:
        with ctx.db.read() as session:
            row, _ = job_row(session, workspace, experiment, job)
            files = {s: log_file(row, s, rank, number) for s in STREAMS}  # type: ignore[arg-type]
            return row.id, files, [v for v in row.secrets.values() if v]

    def _state() -> tuple[str, int | None, int]:
        with ctx.db.read() as session:
            row, _ = job_row(session, workspace, experiment, job)
            return row.state, row.exit_code, max(1, row.attempt_count)

    job_id, files, secrets = await asyncio.to_thread(_load, attempt)
    tails = {stream: _Tail(path) for stream, path in files.items()}
    following = attempt
    while True:
        state, exit_code, latest = await asyncio.to_thread(_state)
        final = JobState(state).is_terminal
        moved_on = attempt is None and following is not None and latest > following
        sent = False
        for stream, tail in tails.items():
            more = True
            while more:  # to the end of what is written: before an end event, every byte
                lines, more = tail.read_lines(final=final or moved_on)
                if lines:
                    sent = True
                    yield "".join(_sse(stream, mask(line, secrets)) for line in lines)
        if following is None:
            following = latest
        if moved_on:
            following = latest
            _, files, _ = await asyncio.to_thread(_load, latest)
            tails = {stream: _Tail(path) for stream, path in files.items()}
            yield _sse("attempt", str(latest))
            continue
        if final:
            yield _sse("end", json.dumps({"state": state, "exit_code": exit_code}))
            return
        if not sent:
            await ctx.waiters.wait(job_id, POLL_SECONDS)
