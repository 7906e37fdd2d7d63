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
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from corral.core.errors import InvalidRequest, NotFound
from corral.core.models import MetricPoint, MetricPoints, MetricSeries
from corral.store.tables import JobRow, MetricPointRow, MetricSeriesRow

#: Points in one statement: bounded, whatever one read of the files or one request brings.
BATCH = 1000


@dataclass(frozen=True)
class Point:
    job_id: int
    attempt: int
    rank: int
    name: str
    step: int
    value: float
    at: float


def store_points(session: Session, points: Sequence[Point]) -> int:
    """Store ``points`` (non-finite values are left out: neither database keeps NaN alike); how many were."""
    kept = [p for p in points if math.isfinite(p.value)]
    if not kept:
        return 0
    ids = _series_ids(session, kept)
    last: dict[tuple[int, int], Point] = {}
    for p in kept:  # one point per series and step: the last sent wins, as it would a step sent again later
        last[(ids[_key(p)], p.step)] = p
    rows = [{"series_id": sid, "step": p.step, "value": p.value, "at": p.at} for (sid, _), p in last.items()]
    for start in range(0, len(rows), BATCH):
        session.execute(_upsert(session), rows[start : start + BATCH])
    _update_summaries(session, ids, list(last.values()))
    return len(kept)


def _key(p: Point) -> tuple[int, int, int, str]:
    return (p.job_id, p.attempt, p.rank, p.name)


def _upsert(session: Session):  # type: ignore[no-untyped-def]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(MetricPointRow)
    return stmt.on_conflict_do_update(
        index_elements=[MetricPointRow.series_id, MetricPointRow.step],
        set_={"value": stmt.excluded.value, "at": stmt.excluded.at},
    )


def _series_ids(session: Session, points: Sequence[Point]) -> dict[tuple[int, int, int, str], int]:
    """Each point's series id; series not yet stored are made (from their first point)."""
    wanted = {_key(p): p for p in reversed(points)}
    jobs = {k[0] for k in wanted}
    ids = {
        (job, attempt, rank, name): sid
        for sid, job, attempt, rank, name in session.execute(
            select(
                MetricSeriesRow.id, MetricSeriesRow.job_id, MetricSeriesRow.attempt, MetricSeriesRow.rank,
                MetricSeriesRow.name,
            ).where(MetricSeriesRow.job_id.in_(jobs))
        )
    }  # fmt: skip
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
    return ids


def _update_summaries(session: Session, ids: dict[tuple[int, int, int, str], int], points: Sequence[Point]) -> None:
    by_series: dict[int, list[Point]] = {}
    for p in points:
        by_series.setdefault(ids[_key(p)], []).append(p)
    s = MetricSeriesRow
    for sid, series in by_series.items():
        top = max(series, key=lambda p: p.step)
        low, high = min(p.value for p in series), max(p.value for p in series)
        later = s.last_step <= top.step
        session.execute(
            update(s)
            .where(s.id == sid)
            .values(
                last_value=case((later, top.value), else_=s.last_value),
                last_step=case((later, top.step), else_=s.last_step),
                min_value=case((s.min_value > low, low), else_=s.min_value),
                max_value=case((s.max_value < high, high), else_=s.max_value),
                updated_at=max(p.at for p in series),
            )
        )


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
    """A series (of the latest attempt that has it, unless told), whole when it has at most ``max_points``
    points, else in ``max_points`` buckets of equal step ranges."""
    series = _series(session, job, name, attempt, rank)
    p = MetricPointRow
    low, high, total = session.execute(
        select(func.min(p.step), func.max(p.step), func.count()).where(p.series_id == series.id)
    ).one()
    if total <= max_points:
        rows = session.execute(select(p.step, p.value, p.at).where(p.series_id == series.id).order_by(p.step))
        points = [MetricPoint(step=st, value=v, min=v, max=v, at=_ts(at)) for st, v, at in rows]
    else:
        # Bucket of a step: its place in [low, high] scaled to max_points (integer arithmetic in both databases).
        bucket = ((p.step - low) * max_points // (high - low + 1)).label("bucket")
        query = (
            select(func.min(p.step), func.avg(p.value), func.min(p.value), func.max(p.value), func.count(),
                   func.max(p.at))
            .where(p.series_id == series.id)
            .group_by(bucket)
            .order_by(bucket)
        )  # fmt: skip
        points = [
            MetricPoint(step=st, value=mean, min=lo, max=hi, count=n, at=_ts(at))
            for st, mean, lo, hi, n, at in session.execute(query)
        ]
    return MetricPoints(
        name=name, attempt=series.attempt, rank=series.rank, total=total, downsampled=total > max_points,
        points=points,
    )  # fmt: skip


EXPORT_FORMATS = ("csv", "jsonl")


def export_points(session: Session, job: JobRow, name: str, *, attempt: int | None, fmt: str) -> Iterator[str]:
    """Every point of ``name`` (every rank; every attempt unless told) at full resolution, as CSV or JSON lines."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidRequest(f"format: one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
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
