"""A job's metrics: its series, one series (whole, downsampled, or exported), and reports sent over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from corral.core.errors import Conflict, InvalidRequest, TooLarge
from corral.core.models import METRIC_NAME_PATTERN, MetricPoints, MetricReports, MetricsAccepted, MetricSeries
from corral.core.states import JobState
from corral.server.deps import Allowed, Ctx, PathName
from corral.server.services import metrics as service
from corral.server.services.lookup import job_row

router = APIRouter(prefix="/workspaces/{ws}/experiments/{exp}/jobs/{name}/metrics", tags=["metrics"])
#: The body of one report.
MAX_REPORT_BYTES = 1 << 20
#: A metric's name in the URL (``val/acc`` too: the rest of the path).
MetricName = Annotated[str, Path(pattern=METRIC_NAME_PATTERN, description="a metric's name")]


@router.get("")
def list_metrics(ws: PathName, exp: PathName, name: PathName, ctx: Ctx) -> list[MetricSeries]:
    """The job's series (per attempt, rank and name) with their last value, minimum and maximum."""
    with ctx.db.read() as session:
        job, _ = job_row(session, ws, exp, name)
        return service.list_series(session, job)


@router.post("")
async def report_metrics(ws: PathName, exp: PathName, name: PathName, ctx: Ctx, access: Allowed,
                         request: Request) -> MetricsAccepted:  # fmt: skip
    """Points of the job's running attempt (at most 1000, 1 MiB); ``stop`` says the job is being stopped."""
    declared = int(request.headers.get("content-length") or 0)
    body = await request.body() if declared <= MAX_REPORT_BYTES else b""
    if declared > MAX_REPORT_BYTES or len(body) > MAX_REPORT_BYTES:
        raise TooLarge(f"metrics: a report is at most {MAX_REPORT_BYTES} bytes; send the points in several")
    try:
        reports = MetricReports.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", details=[{"loc": where, "message": first["msg"]}]) from None
    with ctx.db.write() as session:
        job, _ = job_row(session, ws, exp, name)
        access.check_job_change(submitted_by=job.submitted_by, job=job.name)
        if job.attempt_count == 0:
            raise Conflict(f"job {name!r} has not started: report metrics from its processes")
        now = time.time()
        points = [
            service.Point(job.id, job.attempt_count, p.rank, p.name, p.step, p.value, p.time or now)
            for p in reports.points
        ]
        accepted = service.store_points(session, points)
        stopping = job.state != JobState.RUNNING
    return MetricsAccepted(accepted=accepted, stop=stopping)


@router.get("/{metric:path}", response_model=None)
def read_metric(
    ws: PathName,
    exp: PathName,
    name: PathName,
    metric: MetricName,
    ctx: Ctx,
    attempt: Annotated[int | None, Query(ge=1, description="The attempt (default: the latest that has it).")] = None,
    rank: Annotated[int, Query(ge=0)] = 0,
    max_points: Annotated[int, Query(ge=2, le=100_000, description="More points: downsampled to this.")] = 1000,
    format: Annotated[str | None, Query(description="csv or jsonl: every rank's points at full resolution.")] = None,
) -> MetricPoints | StreamingResponse:
    """One metric: a rank's series (``rank``, default 0), or with ``format`` every point of every rank."""
    with ctx.db.read() as session:
        job, _ = job_row(session, ws, exp, name)
        if format is None:
            return service.read_points(session, job, metric, attempt=attempt, rank=rank, max_points=max_points)
        if format not in service.EXPORT_FORMATS:
            raise InvalidRequest(f"format: one of {', '.join(service.EXPORT_FORMATS)}, got {format!r}")

    def rows() -> Iterator[str]:
        with ctx.db.read() as session:
            job, _ = job_row(session, ws, exp, name)
            yield from service.export_points(session, job, metric, attempt=attempt, fmt=format)

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    filename = f"{name}-{metric.replace('/', '_')}.{format}"
    return StreamingResponse(
        rows(), media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
