from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import Field, TypeAdapter
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse

from corral.core.errors import InvalidRequest
from corral.core.models import FilePage, Job, JobCreate, JobEvent, Strict
from corral.core.specs import NAME_PATTERN
from corral.core.states import JobState
from corral.server.deps import Allowed, Ctx, Cursor, PathName
from corral.server.openapi import FILE_RESPONSE, LIST_RESPONSE, LOG_RESPONSE
from corral.server.services import commands, outputs
from corral.server.services import jobs as service
from corral.server.services.logstream import follow_job, parse_cursor, parse_ranks
from corral.server.services.lookup import job_row
from corral.server.services.volumes import read_in

router = APIRouter(prefix="/workspaces/{ws}/experiments/{exp}/jobs", tags=["jobs"])
#: Jobs of every experiment of a workspace: ``job list --all``, and finding a job by its name alone.
workspace_router = APIRouter(prefix="/workspaces/{ws}/jobs", tags=["jobs"])
JobLimit = Query(1000, ge=1, le=10_000)
#: Jobs in one submission of many (``POST …/jobs/batch``).
MAX_BATCH = 1000
#: A follow's cursor in ``Last-Event-ID``: an offset for each stream of many ranks (about 10 bytes each). In the
#: URL (``?cursor=``) it stays within what every proxy and client passes in a request line.
MAX_CURSOR = 256 * 1024
MAX_QUERY_CURSOR = 8000


@dataclass
class JobFilter:
    """What a job list may be narrowed to, and where its page starts."""

    state: JobState | None = None
    name: Annotated[str | None, Query(pattern=NAME_PATTERN, description="This name only.")] = None
    prefix: Annotated[str | None, Query(max_length=64, description="Names that start with this.")] = None
    cursor: Cursor = None
    limit: int = JobLimit


#: Jobs (a page, a batch just stored), written in one call: FastAPI would dump each job to a dict, validate it
#: again and encode that.
_JOB_LIST = TypeAdapter(list[Job])


def _job_page(ctx: Ctx, ws: str, exp: str | None, f: JobFilter) -> Response:
    with ctx.db.read() as session:
        jobs, next_cursor = service.list_jobs(
            session, workspace=ws, experiment=exp, state=f.state, name=f.name, prefix=f.prefix,
            after=f.cursor, limit=f.limit,
        )  # fmt: skip
    headers = {"X-Next-Cursor": next_cursor} if next_cursor is not None else None
    return Response(_JOB_LIST.dump_json(jobs), media_type="application/json", headers=headers)


@workspace_router.get("", response_model=list[Job], responses=LIST_RESPONSE)
def list_workspace_jobs(ws: PathName, ctx: Ctx, f: Annotated[JobFilter, Depends()]) -> Response:
    """Jobs of every experiment of the workspace, oldest first; ``X-Next-Cursor`` is set when more follow."""
    return _job_page(ctx, ws, None, f)


@router.post("", status_code=201, response_model=Job, responses={200: {"model": Job, "description": "dry_run: valid"}})
async def create_job(
    ws: PathName,
    exp: PathName,
    body: JobCreate,
    ctx: Ctx,
    access: Allowed,
    dry_run: Annotated[bool, Query(description="Check everything a submission checks; store nothing.")] = False,
) -> Response:
    # Runs on the event loop, not in the thread pool: a submission is a few milliseconds of work, and a
    # pool of busy threads would starve the control loop's thread of the GIL (measured: -40% throughput).
    # Checked here, stored by the group commit's thread: the event loop reads the next request meanwhile.
    request = body if body.experiment else body.model_copy(update={"experiment": exp})
    if dry_run:
        job = commands.check_job(ctx, workspace=ws, request=request, access=access)
    else:
        [(job, _)] = await asyncio.wrap_future(commands.submit_job(ctx, workspace=ws, request=request, access=access))
    # The model is already valid: skip FastAPI's second validation on the submission hot path.
    return Response(job.model_dump_json(), status_code=200 if dry_run else 201, media_type="application/json")


class JobBatch(Strict):
    """Jobs to submit at once (``experiment``: the path's, unless a job names its own)."""

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_BATCH)


@router.post("/batch", status_code=201, response_model=list[Job])
async def create_jobs(ws: PathName, exp: PathName, body: JobBatch, ctx: Ctx, access: Allowed) -> Response:
    """Up to 1,000 jobs in one transaction: all are queued, or none (the first refused says ``jobs[i]`` and
    why). What the user's limits allow is counted for each job."""
    requests = [r if r.experiment else r.model_copy(update={"experiment": exp}) for r in body.jobs]
    made = await asyncio.wrap_future(commands.submit_jobs(ctx, workspace=ws, requests=requests, access=access))
    return Response(_JOB_LIST.dump_json([job for job, _ in made]), status_code=201, media_type="application/json")


@router.get("", response_model=list[Job], responses=LIST_RESPONSE)
def list_jobs(ws: PathName, exp: PathName, ctx: Ctx, f: Annotated[JobFilter, Depends()]) -> Response:
    """Jobs of the experiment, oldest first; ``X-Next-Cursor`` is set when more follow."""
    return _job_page(ctx, ws, exp, f)


@router.get("/{name}")
async def get_job(ws: PathName, exp: PathName, name: PathName, ctx: Ctx) -> Job:
    return await ctx.read(lambda session: service.get_job(session, workspace=ws, experiment=exp, name=name))


@router.get("/{name}/wait", response_model=Job)
async def wait_job(
    ws: PathName,
    exp: PathName,
    name: PathName,
    ctx: Ctx,
    timeout: float = Query(30.0, ge=0, le=300),
) -> Response:
    """The job once it has ended, or as it is after ``timeout`` seconds (check its state)."""

    def _load(session: Session) -> tuple[Job, int]:
        return service.load_job(session, workspace=ws, experiment=exp, name=name)

    job, job_id = await ctx.read(_load)
    if not job.state.is_terminal:
        with ctx.waiters.subscribe(job_id) as ended:
            job, _ = await ctx.read(_load)  # after subscribing: an end in between is not missed
            if not job.state.is_terminal and await ended.wait(timeout):
                job, _ = await ctx.read(_load)
    return Response(job.model_dump_json(), media_type="application/json")


@router.post("/{name}/terminate")
def terminate_job(
    ws: PathName,
    exp: PathName,
    name: PathName,
    ctx: Ctx,
    access: Allowed,
    index: Annotated[int | None, Query(ge=0, description="An array's task: this index only.")] = None,
) -> Job:
    """Its submitter, an owner of the workspace or an admin; an array's tasks too (or one, ``index``)."""
    if index is not None:
        return commands.terminate_index(ctx, workspace=ws, experiment=exp, name=name, index=index, access=access)
    return commands.terminate_job(ctx, workspace=ws, experiment=exp, name=name, access=access)


@router.delete("/{name}", status_code=204)
def delete_job(ws: PathName, exp: PathName, name: PathName, ctx: Ctx, access: Allowed) -> Response:
    """Its submitter, an owner of the workspace or an admin."""
    commands.delete_job(ctx, workspace=ws, experiment=exp, name=name, access=access)
    return Response(status_code=204)


@router.get("/{name}/events")
async def list_events(ws: PathName, exp: PathName, name: PathName, ctx: Ctx) -> list[JobEvent]:
    return await ctx.read(lambda session: service.list_events(session, workspace=ws, experiment=exp, name=name))


@router.get("/{name}/logs", response_model=None, responses=LOG_RESPONSE)
def get_logs(
    ws: PathName,
    exp: PathName,
    name: PathName,
    ctx: Ctx,
    rank: int = Query(0, ge=0),
    stream: outputs.LogStream = "stdout",
    follow: bool = False,
    attempt: int | None = Query(None, ge=1),
    tail: int | None = Query(None, ge=0, description="Only the last lines, this many (follow: of each stream)."),
    offset: int = Query(0, ge=0, description="Start at this byte (a previous read's X-Log-Size)."),
    # ASCII only: a request line stays within what the HTTP parser takes (non-ASCII is 12 bytes a character).
    ranks: str | None = Query(
        None, max_length=32_768, pattern=r"^(all|[0-9 ,]*)$", description="follow: 'all' or ranks such as 0,3."
    ),
    streams: str = Query("stdout,stderr", max_length=20, description="follow: stdout, stderr or both."),
    cursor: str | None = Query(None, max_length=MAX_QUERY_CURSOR, description="follow: go on from here."),
    # Printable ASCII, as any cursor the server gave: what else a header could hold, HTTP's parser refuses first.
    last_event_id: Annotated[str | None, Header(max_length=MAX_CURSOR, pattern=r"^[ -~]*$")] = None,
) -> Response:
    """The log of one rank (of the latest attempt, or ``attempt``), streamed whatever its size; ``mpirun`` is
    an MPI job's launcher output. ``follow=true`` streams the job's state and the chosen ranks' stdout and
    stderr as Server-Sent Events until it ends, every byte included, resumable from an event's id."""
    if follow:
        chosen_streams = [s for s in streams.split(",") if s]
        if not chosen_streams or any(s not in ("stdout", "stderr") for s in chosen_streams):
            raise InvalidRequest(f"streams: give stdout, stderr or both, got {streams!r}")
        with ctx.db.read() as session:  # fail fast (404, bad rank, bad cursor) before the stream starts
            row, _ = service.job_row(session, ws, exp, name)
            chosen = parse_ranks(ranks, rank, row.rank_count)
            outputs.log_file(row, "stdout", chosen[0], attempt)
        parse_cursor(cursor or last_event_id)
        events = follow_job(
            ctx, workspace=ws, experiment=exp, job=name, ranks=chosen, streams=chosen_streams, attempt=attempt,
            cursor=cursor or last_event_id, tail=tail,
        )  # fmt: skip
        return EventSourceResponse(events, ping=15, headers={"Cache-Control": "no-cache"})
    with ctx.db.read() as session:
        path, secrets = outputs.log_path(
            session, workspace=ws, experiment=exp, job=name, stream=stream, rank=rank, attempt=attempt
        )
    start, end = outputs.log_range(path, offset=offset, tail=tail)
    return StreamingResponse(
        outputs.read_masked(path, secrets, start=start, end=end),
        media_type="text/plain; charset=utf-8",
        headers={"X-Log-Size": str(end)},
    )


@router.get("/{name}/files")
def list_files(
    ws: PathName,
    exp: PathName,
    name: PathName,
    ctx: Ctx,
    output: str | None = None,
    path: str = "",
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> FilePage:
    with ctx.db.read() as session:
        return outputs.list_files(
            session,
            workspace=ws,
            experiment=exp,
            job=name,
            output=output,
            path=path,
            cursor=cursor,
            limit=limit,
        )


@router.get("/{name}/files/content", response_model=None, responses=FILE_RESPONSE)
def download_file(
    ws: PathName, exp: PathName, name: PathName, ctx: Ctx, output: str, path: str
) -> FileResponse | StreamingResponse:
    with ctx.db.read() as session:
        row, _ = job_row(session, ws, exp, name)
        on_volume = outputs.store_output(session, row, ws, exp, output)
        if on_volume is None:
            target, secrets = outputs.file_path(
                session, workspace=ws, experiment=exp, job=name, output=output, path=path
            )
    if on_volume is not None:  # uploaded to a volume: streamed from its store
        chunks = read_in(*on_volume, path)
        filename = {"Content-Disposition": f"attachment; filename*=utf-8''{quote(path.rsplit('/', 1)[-1])}"}
        return StreamingResponse(chunks, media_type="application/octet-stream", headers=filename)
    if secrets:  # a log of a job with secrets: served masked
        disposition = {"Content-Disposition": f"attachment; filename*=utf-8''{quote(target.name)}"}
        return StreamingResponse(
            outputs.read_masked(target, secrets), media_type="application/octet-stream", headers=disposition
        )
    return FileResponse(target, filename=target.name, media_type="application/octet-stream")
