"""Follow a job as Server-Sent Events: its state, and the logs of the ranks asked for, until it ends.

Events, each with JSON data:

- ``state``: ``{"state", "reason", "attempt", "nodes", "ranks"}`` (``ranks``: those followed), first,
  then on every change (a queued job's reason, the nodes it runs on once it starts);
- ``log``: ``{"rank", "node", "stream", "lines": [...]}``: whole lines of one rank's stdout or stderr,
  as written (a ``\\r`` of a progress bar is kept); its ``id`` says where that stream now stands;
- ``attempt``: ``{"attempt": n}``: the job was requeued; the new attempt's logs follow from their start;
- ``end``: ``{"state", "exit_code", "error", "seconds"}``, last.

Every byte of every followed file is sent before ``end``. A client that loses the connection sends a
cursor (``Last-Event-ID``, or ``?cursor=``) and the stream goes on from there, neither repeating nor losing
a line. A cursor is ``<attempt>/<rank><o|e><offset>,…`` (offsets at line ends; a stream not named starts at
0, or at ``tail``). Each ``log`` event's id is the cursor part of its own stream (``2/3o1024``), so ids stay
small however many ranks are followed; a client resumes with the union of the parts it got since the last
``attempt`` event (the SDK keeps it). With one stream followed, the last id is the whole cursor, as a plain
``EventSource`` expects. ``tail=N`` starts each stream at its last N lines. Between reads the stream sleeps
on the job's end-waiter, so the end comes as soon as it happens.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sse_starlette import ServerSentEvent

from corral.core.errors import InvalidRequest
from corral.core.states import JobState
from corral.server.context import ServerContext
from corral.server.services.jobs import rank_nodes_of
from corral.server.services.lookup import job_row
from corral.server.services.outputs import CHUNK_BYTES, log_file, log_range, mask
from corral.store.tables import AttemptRow

POLL_SECONDS = 0.25
STREAMS = ("stdout", "stderr")
_CURSOR_PART = re.compile(r"^(\d+)([oe])(\d+)$")


class _Tail:
    """One log file read from where the last read stopped; ``offset`` is always at the end of a line sent."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._carry = b""

    def read_lines(self, *, final: bool) -> tuple[list[str], bool]:
        """The whole lines written since the last read (at most a chunk's worth), and whether more is already
        there. With ``final`` the last line counts without its newline."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset + len(self._carry))
                chunk = f.read(CHUNK_BYTES)
        except FileNotFoundError:
            chunk = b""
        more = len(chunk) == CHUNK_BYTES
        *whole, self._carry = (self._carry + chunk).split(b"\n")
        consumed = sum(len(line) + 1 for line in whole)  # each with its newline
        if (final and not more and self._carry) or len(self._carry) > CHUNK_BYTES:  # the end, or a huge line
            whole.append(self._carry)
            consumed += len(self._carry)
            self._carry = b""
        self.offset += consumed
        return [line.decode(errors="replace") for line in whole], more


@dataclass
class _Snapshot:
    state: str
    reason: str | None
    attempt: int
    exit_code: int | None
    error: dict[str, str] | None
    seconds: float | None
    nodes: list[str]


def parse_ranks(text: str | None, rank: int, count: int) -> list[int]:
    """``all``, ``0,3`` or None (then ``rank``), checked against the job's ``count`` ranks."""
    if text is None:
        chosen = [rank]
    elif text == "all":
        chosen = list(range(count))
    else:
        try:
            chosen = sorted({int(part) for part in text.split(",")})
        except ValueError:
            raise InvalidRequest(f"ranks: give 'all' or ranks such as 0,3, got {text!r}") from None
    bad = [r for r in chosen if not 0 <= r < count]
    if bad or not chosen:
        raise InvalidRequest(f"ranks: the job has ranks 0..{count - 1}, got {text if text is not None else rank}")
    return chosen


def parse_cursor(cursor: str | None) -> tuple[int, dict[tuple[int, str], int]] | None:
    if not cursor:
        return None
    attempt, _, parts = cursor.partition("/")
    offsets: dict[tuple[int, str], int] = {}
    try:
        for part in filter(None, parts.split(",")):
            match = _CURSOR_PART.match(part)
            if match is None:
                raise ValueError(part)
            offsets[(int(match[1]), "stdout" if match[2] == "o" else "stderr")] = int(match[3])
        return int(attempt), offsets
    except ValueError:
        raise InvalidRequest(f"cursor: not one this server gave, got {cursor!r}") from None


def _cursor_part(attempt: int, rank: int, stream: str, offset: int) -> str:
    return f"{attempt}/{rank}{'o' if stream == 'stdout' else 'e'}{offset}"


async def follow_job(
    ctx: ServerContext,
    *,
    workspace: str,
    experiment: str,
    job: str,
    ranks: Sequence[int],
    streams: Sequence[str] = STREAMS,
    attempt: int | None = None,
    cursor: str | None = None,
    tail: int | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Without ``attempt``, follow the latest one: when the job is requeued, an ``attempt`` event comes and
    the new attempt's lines follow. ``tail``: without a cursor, start each stream at its last lines."""
    resume = parse_cursor(cursor)

    def _load(number: int | None) -> tuple[int, dict[tuple[int, str], Path], list[str]]:
        with ctx.db.read() as session:
            row, _ = job_row(session, workspace, experiment, job)
            files = {(r, s): log_file(row, s, r, number) for r in ranks for s in streams}  # type: ignore[arg-type]
            return row.id, files, [v for v in row.secrets.values() if v]

    def _snapshot(number: int | None) -> _Snapshot:
        with ctx.db.read() as session:
            row, _ = job_row(session, workspace, experiment, job)
            latest = max(1, row.attempt_count)
            names = session.scalar(
                select(AttemptRow.node_names).where(
                    AttemptRow.job_id == row.id, AttemptRow.number == (number or latest)
                )
            )
            seconds = None
            if row.ended_at is not None and row.started_at is not None:
                seconds = row.ended_at - row.started_at
            error = {"code": row.error_code, "message": row.error_message or ""} if row.error_code else None
            return _Snapshot(
                row.state, row.reason if row.state == JobState.QUEUED else None, latest, row.exit_code, error,
                seconds, list(names or []) if row.state != JobState.QUEUED else [],
            )  # fmt: skip

    def _rank_nodes(nodes: list[str]) -> list[str | None]:
        with ctx.db.read() as session:
            return rank_nodes_of(session, job_row(session, workspace, experiment, job)[0], nodes)

    following = attempt
    if resume is not None and attempt is None:
        following = resume[0]
    job_id, files, secrets = await asyncio.to_thread(_load, following)
    if resume is not None:
        offsets = resume[1] if resume[0] == (following or resume[0]) else {}
    elif tail is not None:
        offsets = {key: log_range(path, tail=tail)[0] for key, path in files.items()}
    else:
        offsets = {}
    tails = {key: _Tail(path, offsets.get(key, 0)) for key, path in files.items()}
    shown: tuple[str, str | None, int, tuple[str, ...]] | None = None
    placed: list[str | None] = []
    while True:
        now = await asyncio.to_thread(_snapshot, following)
        if following is None:
            following = now.attempt
        key = (now.state, now.reason, now.attempt, tuple(now.nodes))
        if key != shown:
            shown = key
            if now.nodes:
                placed = await asyncio.to_thread(_rank_nodes, now.nodes)
            state = {
                "state": now.state, "reason": now.reason, "attempt": now.attempt, "nodes": now.nodes,
                "ranks": list(ranks),
            }  # fmt: skip
            yield ServerSentEvent(json.dumps(state), event="state")
        final = JobState(now.state).is_terminal
        moved_on = attempt is None and now.attempt > following
        sent = False
        # Lines are read once the attempt's nodes are known (a job that ran and ended since this snapshot said
        # queued would give its lines without their nodes): the next snapshot has them.
        readable = bool(now.nodes) or final or moved_on
        for (rank, stream), reader in tails.items() if readable else ():
            more = True
            while more:  # to the end of what is written: before an end event, every byte
                lines, more = reader.read_lines(final=final or moved_on)
                if lines:
                    sent = True
                    node = placed[rank] if rank < len(placed) else None
                    data = {"rank": rank, "node": node, "stream": stream, "lines": [mask(x, secrets) for x in lines]}
                    yield ServerSentEvent(
                        json.dumps(data), event="log", id=_cursor_part(following, rank, stream, reader.offset)
                    )
        if moved_on:
            following = now.attempt
            _, files, _ = await asyncio.to_thread(_load, following)
            tails = {key: _Tail(path) for key, path in files.items()}
            yield ServerSentEvent(json.dumps({"attempt": following}), event="attempt", id=f"{following}/")
            continue
        if final:
            end = {"state": now.state, "exit_code": now.exit_code, "error": now.error, "seconds": now.seconds}
            yield ServerSentEvent(json.dumps(end), event="end")
            return
        if not sent:
            await ctx.waiters.wait(job_id, POLL_SECONDS)
