"""Metrics in the database: series per job, attempt, rank and name, and their points.

Points come from the files the server reads (``corral.runtime.report``, ``$CORRAL_METRICS_FILE``, a pattern over
stdout: ``server/metrics_reader.py``) and from ``POST …/metrics``, all through :func:`store_points`. A step stored
again replaces the point (a file read again after a restart, a request retried), so storing is idempotent. Each
series keeps its last point, minimum and maximum for listings, updated in SQL (two writers never lose one
another's). A series is read whole or downsampled into buckets of steps, each with its mean, minimum and maximum,
so a spike survives.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.core.errors import NotFound
from corral.core.models import MetricPoint, MetricPoints, MetricSeries
from corral.store.tables import JobRow, MetricPointRow, MetricSeriesRow

#: Points in one statement: bounded, whatever one read of the files or one request brings.
BATCH = 1000


class Point(NamedTuple):
    """A point as it arrives (a tuple: tens of thousands a second are made)."""

    job_id: int
    attempt: int
    rank: int
    name: str
    step: int
    value: float
    at: float


def store_points(
    session: Session, points: Sequence[Point], known: dict[tuple[int, int, int, str], int] | None = None
) -> int:
    """Store ``points`` (non-finite values are left out: neither database keeps NaN alike); how many were.

    ``known``: series ids from earlier calls, kept by a caller that stores often (the reader), and added to here.
    The points and the summaries go to the driver as two ``executemany``: tens of thousands of points a second
    cost the server little of its one interpreter."""
    kept = [p for p in points if math.isfinite(p.value)]
    if not kept:
        return 0
    ids = known if known is not None else {}
    _series_ids(session, kept, ids)
    # Rows in the order sent: a step sent twice is stored twice, the last one staying (each row its own statement).
    rows = [(ids[p[:4]], p.step, p.value, p.at) for p in kept]
    connection = session.connection()
    mark = "%s" if connection.dialect.paramstyle in ("format", "pyformat") else "?"
    for start in range(0, len(rows), BATCH):
        connection.exec_driver_sql(UPSERT.replace("?", mark), rows[start : start + BATCH])
    connection.exec_driver_sql(SUMMARY.replace("?", mark), _summaries(rows))
    return len(kept)


#: The same text in SQLite (3.24 and later) and PostgreSQL, with the driver's own placeholders put in.
UPSERT = (
    "INSERT INTO metric_points (series_id, step, value, at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (series_id, step) DO UPDATE SET value = excluded.value, at = excluded.at"
)
#: Every SET reads the row as it was, so the order of the clauses does not matter.
SUMMARY = (
    "UPDATE metric_series SET "
    "last_value = CASE WHEN last_step <= ? THEN ? ELSE last_value END, "
    "last_step = CASE WHEN last_step <= ? THEN ? ELSE last_step END, "
    "min_value = CASE WHEN min_value > ? THEN ? ELSE min_value END, "
    "max_value = CASE WHEN max_value < ? THEN ? ELSE max_value END, "
    "updated_at = ? WHERE id = ?"
)


def _summaries(rows: list[tuple[int, int, float, float]]) -> list[tuple[float | int, ...]]:
    """Each series' highest step with its value, its lowest and highest value, its latest time: SUMMARY's rows."""
    by_series: dict[int, list[tuple[int, int, float, float]]] = {}
    for row in rows:
        by_series.setdefault(row[0], []).append(row)
    found: list[tuple[float | int, ...]] = []
    for sid, series in by_series.items():
        top = max(reversed(series), key=itemgetter(1))  # the highest step, and of two such the last sent
        values = [r[2] for r in series]
        low, high, at = min(values), max(values), max(r[3] for r in series)
        found.append((top[1], top[2], top[1], top[1], low, low, high, high, at, sid))
    return found


def _series_ids(session: Session, points: Sequence[Point], ids: dict[tuple[int, int, int, str], int]) -> None:
    """Puts each point's series id in ``ids``; series not yet stored are made (from their first point)."""
    missing = {p[:4] for p in points}.difference(ids)
    if not missing:
        return
    wanted = {p[:4]: p for p in reversed(points) if p[:4] in missing}
    s = MetricSeriesRow
    jobs = {k[0] for k in wanted}
    for sid, job, attempt, rank, name in session.execute(
        select(s.id, s.job_id, s.attempt, s.rank, s.name).where(s.job_id.in_(jobs))
    ):
        ids[(job, attempt, rank, name)] = sid
    new = [
        MetricSeriesRow(
            job_id=p.job_id, attempt=p.attempt, rank=p.rank, name=p.name, last_step=p.step, last_value=p.value,
            min_value=p.value, max_value=p.value, updated_at=p.at,
        )
        for key, p in wanted.items()
        if key not in ids
    ]  # fmt: skip
    if new:
        session.add_all(new)
        session.flush()
        ids.update({(r.job_id, r.attempt, r.rank, r.name): r.id for r in new})


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def list_series(session: Session, job: JobRow) -> list[MetricSeries]:
    """The job's series, by name, attempt and rank."""
    s = MetricSeriesRow
    rows = session.scalars(select(s).where(s.job_id == job.id).order_by(s.name, s.attempt, s.rank))
    return [
        MetricSeries(
            name=r.name, attempt=r.attempt, rank=r.rank, last_step=r.last_step, last_value=r.last_value,
            min=r.min_value, max=r.max_value, updated_at=_ts(r.updated_at),
        )
        for r in rows
    ]  # fmt: skip


def _series(session: Session, job: JobRow, name: str, attempt: int | None, rank: int) -> MetricSeriesRow:
    s = MetricSeriesRow
    query = select(s).where(s.job_id == job.id, s.name == name, s.rank == rank)
    if attempt is not None:
        query = query.where(s.attempt == attempt)
    found = session.scalars(query.order_by(s.attempt.desc()).limit(1)).first()
    if found is None:
        where = f"rank {rank}" + (f" of attempt {attempt}" if attempt is not None else "")
        raise NotFound(f"job {job.name!r} has no metric {name!r} for {where}")
    return found


def read_points(
    session: Session, job: JobRow, name: str, *, attempt: int | None, rank: int, max_points: int
) -> MetricPoints:
    """A series (of the latest attempt that has it, unless told), whole when its steps span at most
    ``max_points``, else in ``max_points`` buckets of equal step ranges (empty ones left out)."""
    series = _series(session, job, name, attempt, rank)
    p = MetricPointRow
    # The lowest and highest step come from the primary key's ends; no count of the whole series.
    low, high = session.execute(select(func.min(p.step), func.max(p.step)).where(p.series_id == series.id)).one()
    if high - low + 1 <= max_points:
        rows = session.execute(select(p.step, p.value, p.at).where(p.series_id == series.id).order_by(p.step))
        points = [MetricPoint(step=st, value=v, min=v, max=v, at=_ts(at)) for st, v, at in rows]
    else:
        buckets = _buckets_sqlite if session.get_bind().dialect.name == "sqlite" else _buckets_grouped
        points = [
            MetricPoint(step=st, value=total / n, min=lo, max=hi, count=n, at=_ts(at))
            for st, total, lo, hi, n, at in buckets(session, series.id, low, high, max_points)
        ]
    return MetricPoints(
        name=name, attempt=series.attempt, rank=series.rank, total=sum(pt.count for pt in points),
        downsampled=any(pt.count > 1 for pt in points), points=points,
    )  # fmt: skip


Bucket = tuple[int, float, float, float, int, float]


def _buckets_grouped(session: Session, series: int, low: int, high: int, count: int) -> list[Bucket]:
    """Each bucket's first step (:func:`_edges`), sum, minimum, maximum, points and latest time, in one GROUP BY
    (PostgreSQL hashes the groups). A step's bucket: its place in [low, high] scaled to ``count``, in integers."""
    p = MetricPointRow
    bucket = ((p.step - low) * count // (high - low + 1)).label("bucket")
    query = (
        select(bucket, func.sum(p.value), func.min(p.value), func.max(p.value), func.count(), func.max(p.at))
        .where(p.series_id == series)
        .group_by(bucket)
        .order_by(bucket)
    )
    edges = _edges(low, high, count)
    return [(edges[i], total, lo, hi, n, at) for i, total, lo, hi, n, at in session.execute(query)]


def _edges(low: int, high: int, count: int) -> list[int]:
    """The first step of each of ``count`` buckets of [low, high] (and one past the last): bucket ``i`` holds the
    steps from ``low + ceil(i * span / count)``, exactly those whose place scaled to ``count`` is ``i``."""
    span = high - low + 1
    return [low + (i * span + count - 1) // count for i in range(count + 1)]


def _buckets_sqlite(session: Session, series: int, low: int, high: int, count: int) -> list[Bucket]:
    """The same buckets as :func:`_buckets_grouped`, one range of the primary key each: SQLite would sort every
    point to group by an expression (twice as slow), and in-process a query costs no round trip."""
    edges = _edges(low, high, count)
    cursor = session.connection().connection.cursor()
    query = (
        "SELECT sum(value), min(value), max(value), count(*), max(at) FROM metric_points "
        "WHERE series_id = ? AND step >= ? AND step < ?"
    )
    try:
        found = [(edges[i], *cursor.execute(query, (series, edges[i], edges[i + 1])).fetchone()) for i in range(count)]
    finally:
        cursor.close()
    return [row for row in found if row[4]]


EXPORT_FORMATS = ("csv", "jsonl")


def export_points(session: Session, job: JobRow, name: str, *, attempt: int | None, fmt: str) -> Iterator[str]:
    """Every point of ``name`` (every rank; every attempt unless told) at full resolution, as CSV or JSON lines
    (``fmt``, one of EXPORT_FORMATS: the route checks it before the response starts)."""
    s, p = MetricSeriesRow, MetricPointRow
    query = (
        select(s.attempt, s.rank, p.step, p.value, p.at)
        .join(p, p.series_id == s.id)
        .where(s.job_id == job.id, s.name == name)
        .order_by(s.attempt, s.rank, p.step)
    )
    if attempt is not None:
        query = query.where(s.attempt == attempt)
    rows = session.execute(query.execution_options(yield_per=BATCH))
    if fmt == "csv":
        yield "attempt,rank,step,value,time\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for n, (a, r, st, v, at) in enumerate(rows, 1):
        if fmt == "csv":
            writer.writerow((a, r, st, repr(v), f"{at:.6f}"))
        else:
            buffer.write(json.dumps({"attempt": a, "rank": r, "step": st, "value": v, "time": at}) + "\n")
        if n % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
