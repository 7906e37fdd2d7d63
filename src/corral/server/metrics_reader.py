"""Reads what jobs' processes report into the metric tables as the files grow, not after the job.

Each rank of an attempt has ``metrics-<rank>.jsonl`` in its logs folder (``$CORRAL_METRICS_FILE``: what
``corral.runtime.report`` writes, or any program): one JSON object a line, ``{"step": 3, "loss": 0.41}``, with an
optional ``time`` (epoch seconds) and ``rank``. A job whose spec has ``metrics: {from: stdout, pattern: …}`` also
has each rank's stdout read: each line the pattern matches gives a point for each named group.

Every :data:`POLL_SECONDS` the thread reads what was added to the files of each attempt not yet read whole
(``AttemptRow.metrics_read``) and stores it in one transaction; once an attempt has ended, a last read takes what
is left (a last line without its newline included) and marks it read. Offsets live in memory and move only once
their points are stored: a restarted server reads the files again from their start, and since a step stored again
replaces the point, nothing is counted twice. What a line cannot give (not JSON, a value not a number) is left out
and said once per file in the server's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select as io_select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import select, update

from corral.core.models import METRIC_NAME_PATTERN
from corral.launch.layout import JobLayout
from corral.server.process import end_child
from corral.server.services.metrics import Point, store_points
from corral.store.db import Database
from corral.store.tables import AttemptRow, JobRow

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
#: The least time between two passes, woken or not.
MIN_GAP_SECONDS = 0.1
#: Points stored in one transaction.
TRANSACTION = 2000
#: At most this much of one file a pass (a file written faster is read over several passes).
READ_BYTES = 4 << 20
#: A JSONL key that is no metric.
RESERVED = frozenset({"step", "time", "rank"})
_NAME = re.compile(METRIC_NAME_PATTERN)


@dataclass
class _Source:
    path: Path
    rank: int
    #: None: a JSONL metrics file; else the pattern over a log.
    pattern: re.Pattern[str] | None
    offset: int = 0
    partial: bytes = b""
    #: A series' next step where a line gives none.
    counts: dict[tuple[int, str], int] = field(default_factory=dict)
    warned: bool = False


@dataclass
class _Attempt:
    job_id: int
    number: int
    sources: list[_Source]
    ended: bool = False


@dataclass
class _Read:
    """What one pass read from a source: its points, and where the source stands once they are stored."""

    source: _Source
    points: list[Point]
    offset: int
    partial: bytes
    counts: dict[tuple[int, str], int]
    #: It read to the file's end.
    whole: bool


class MetricsReader:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._attempts: dict[int, _Attempt] = {}
        #: Series ids of the attempts being read (``store_points``' ``known``).
        self._series: dict[tuple[int, int, int, str], int] = {}
        #: Attempts the last pass read whole.
        self.finished = 0

    def run(self, stopped: Callable[[float], bool], told: Callable[[], None]) -> None:
        """Read every :data:`POLL_SECONDS`, or sooner when woken (``stopped`` returns early), until
        ``stopped(timeout)`` says to stop; ``told()`` after each pass that stored points or read an attempt whole.
        Passes stay :data:`MIN_GAP_SECONDS` apart: jobs ending by the hundred a second are read a few passes a
        second, not a pass (and a write the server's own writers wait for) each."""
        last = -MIN_GAP_SECONDS
        while not stopped(POLL_SECONDS):
            # The wakes meanwhile join this pass: they wait in the pipe, read at once by the next ``stopped`` (one
            # read a pass, not one a wake: jobs end by the hundred a second).
            time.sleep(max(0.0, last + MIN_GAP_SECONDS - time.monotonic()))
            if stopped(0):
                return
            last = time.monotonic()
            try:
                if self.read_once() or self.finished:
                    told()
            except Exception:  # the next pass reads the same bytes again (offsets moved only once stored)
                self._series.clear()
                log.exception("could not store the jobs' metrics")

    def read_once(self) -> int:
        """One pass: how many points it stored."""
        self._refresh()
        reads = {i: [self._read(a, s) for s in a.sources] for i, a in self._attempts.items()}
        points = [p for rs in reads.values() for r in rs for p in r.points]
        # An attempt that has ended is read whole once each of its files was read to its end.
        done = [i for i, a in self._attempts.items() if a.ended and all(r.whole for r in reads[i])]
        stored = 0
        # Transactions of at most TRANSACTION points: the server's own writers never wait long for one.
        for start in range(0, len(points), TRANSACTION):
            with self._db.write() as session:
                stored += store_points(session, points[start : start + TRANSACTION], self._series)
        self.finished = len(done)
        if done:
            with self._db.write() as session:
                session.execute(update(AttemptRow).where(AttemptRow.id.in_(done)).values(metrics_read=True))
        for r in (r for rs in reads.values() for r in rs):
            r.source.offset, r.source.partial, r.source.counts = r.offset, r.partial, r.counts
        if done:
            ended = {(self._attempts[i].job_id, self._attempts[i].number) for i in done}
            self._series = {k: v for k, v in self._series.items() if k[:2] not in ended}
            for attempt_id in done:
                del self._attempts[attempt_id]
        return stored

    def _refresh(self) -> None:
        """The attempts not yet read whole, with whether each has ended; those gone (their job deleted) dropped."""
        with self._db.read() as session:
            unread = dict(
                session.execute(
                    select(AttemptRow.id, AttemptRow.ended_at).where(AttemptRow.metrics_read.is_(False))
                ).all()
            )
            new = [i for i in unread if i not in self._attempts]
            if new:
                rows = session.execute(
                    select(AttemptRow.id, AttemptRow.number, JobRow.id, JobRow.job_dir, JobRow.rank_count, JobRow.spec)
                    .join(JobRow, JobRow.id == AttemptRow.job_id)
                    .where(AttemptRow.id.in_(new))
                )
                for attempt_id, number, job_id, job_dir, ranks, spec in rows:
                    self._attempts[attempt_id] = _Attempt(job_id, number, _sources(job_dir, number, ranks, spec))
        for attempt_id in list(self._attempts):
            if attempt_id not in unread:
                del self._attempts[attempt_id]
            elif unread[attempt_id] is not None:
                self._attempts[attempt_id].ended = True

    def _read(self, attempt: _Attempt, source: _Source) -> _Read:
        counts = dict(source.counts)
        try:
            with open(source.path, "rb") as f:
                f.seek(source.offset)
                chunk = f.read(READ_BYTES)
        except FileNotFoundError:
            chunk = b""
        data = source.partial + chunk
        lines = data.split(b"\n")
        partial = lines.pop()
        if attempt.ended and len(chunk) < READ_BYTES and partial:  # all there is: its last line too
            lines.append(partial)
            partial = b""
        now = time.time()
        points: list[Point] = []
        skipped = 0
        job, number, pattern = attempt.job_id, attempt.number, source.pattern
        for line in lines:
            if not line.strip():
                continue
            try:
                got = _from_pattern(line, pattern) if pattern else _from_json(line)
            except ValueError:  # orjson's errors are ValueErrors too
                skipped += 1
                continue
            if got is None:
                continue
            step, at, rank, values = got
            rank = source.rank if rank is None else rank
            at = at or now
            for name, value in values.items():
                this = counts.get((rank, name), 0) if step is None else step
                counts[(rank, name)] = this + 1
                points.append(Point(job, number, rank, name, this, float(value), at))
        if skipped and not source.warned:
            source.warned = True
            what = "JSON objects of numbers" if source.pattern is None else "numbers in the pattern's groups"
            log.warning("job %d: %s: left out %d line(s) that are not %s", attempt.job_id, source.path, skipped, what)
        return _Read(source, points, source.offset + len(chunk), partial, counts, len(chunk) < READ_BYTES)


def _sources(job_dir: str, attempt: int, ranks: int, spec: dict[str, object] | None) -> list[_Source]:
    layout = JobLayout(job_dir)
    found = [_Source(Path(layout.metrics(attempt, rank)), rank, None) for rank in range(ranks)]
    metrics = (spec or {}).get("metrics")
    if isinstance(metrics, dict) and metrics.get("pattern"):
        pattern = re.compile(str(metrics["pattern"]))
        found += [_Source(Path(layout.log(attempt, "stdout", rank)), rank, pattern) for rank in range(ranks)]
        found.append(_Source(Path(layout.log(attempt, "mpirun", 0)), 0, pattern))  # an MPI job's ranks, as one
    return found


Parsed = tuple[int | None, float | None, int | None, dict[str, float]]
_NUMBERS = (int, float)


def _from_json(line: bytes) -> Parsed:
    obj = orjson.loads(line)
    if type(obj) is not dict:
        raise ValueError("not an object")
    step, at, rank = obj.pop("step", None), obj.pop("time", None), obj.pop("rank", None)
    if not (step is None or _whole(step)) or not (rank is None or _whole(rank)):
        raise ValueError("step and rank: whole numbers")
    if at is not None and type(at) not in _NUMBERS:
        raise ValueError("time: a number")
    for name, value in obj.items():
        if type(value) not in _NUMBERS or not _valid_name(name):
            raise ValueError("values: numbers, under metric names")
    return step, at, rank, obj


def _from_pattern(line: bytes, pattern: re.Pattern[str]) -> Parsed | None:
    match = pattern.search(line.decode(errors="replace").rstrip("\r"))
    if match is None:
        return None
    groups = {k: v for k, v in match.groupdict().items() if v is not None}
    step = groups.pop("step", None)
    values = {name: float(text) for name, text in groups.items()}  # ValueError: not a number
    return (int(step) if step is not None else None), None, None, values


_VALID_NAMES: set[str] = set()


def _valid_name(name: str) -> bool:
    if name in _VALID_NAMES:
        return True
    if _NAME.match(name) is None:
        return False
    if len(_VALID_NAMES) < 100_000:
        _VALID_NAMES.add(name)
    return True


def _whole(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**62


class ReaderProcess:
    """The reader in a process of its own (``python -m corral.server.metrics_reader``): parsing tens of thousands
    of lines a second would hold the server's interpreter lock, and the control loop waits for it at each system
    call. It writes to the same database. Its standard input wakes it (a line: jobs ended, read them now) and
    ends it (closed: the server stopped, or was killed); its standard output says when a pass stored something
    (``on_stored``, e.g. to wake the sweep driver). The server starts it again if it ends on its own."""

    def __init__(self, database_url: str, on_stored: Callable[[], None] = lambda: None) -> None:
        self._url = database_url
        self.on_stored = on_stored
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="corral-metrics-watch", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        env = {**os.environ, "CORRAL_DATABASE_URL": self._url}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "corral.server.metrics_reader"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env,
        )  # fmt: skip

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            assert process is not None and process.stdout is not None
            for _ in process.stdout:  # a line a pass that stored something
                self.on_stored()
            code = process.wait()
            if self._stopping.wait(1.0):
                return
            log.error("the metrics reader ended (exit %s): starting it again", code)
            self._spawn()

    def wake(self) -> None:
        """Read now (jobs ended: their last lines)."""
        process = self._process
        if process is None or process.stdin is None:
            return
        with self._lock, contextlib.suppress(OSError, ValueError):  # ended, or being restarted
            process.stdin.write(b"\n")
            process.stdin.flush()

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is None:
            return
        end_child(process, self._lock, what="the metrics reader", timeout=10)


def _closed(timeout: float) -> bool:
    """Whether this process's standard input has closed (waiting up to ``timeout`` seconds to see)."""
    ready, _, _ = io_select.select([sys.stdin], [], [], timeout)
    return bool(ready) and not os.read(sys.stdin.fileno(), 4096)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("CORRAL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    db = Database(os.environ["CORRAL_DATABASE_URL"])

    def told() -> None:
        sys.stdout.write("stored\n")
        sys.stdout.flush()

    try:
        MetricsReader(db).run(_closed, told)
    finally:
        db.dispose()


if __name__ == "__main__":
    main()
