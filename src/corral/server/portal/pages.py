"""The portal's pages: each reads what it shows through the services, as the signed-in user, under the API's
rules (a reader of a workspace sees its pages; who may terminate a job is :meth:`Access.check_job_change`'s)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import yaml
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.types import Scope

from corral.core.errors import CorralError, Forbidden, Unauthorized
from corral.server.access import Access, cached_roles, workspace_access
from corral.server.auth import SESSION_COOKIE, Principal
from corral.server.deps import Ctx, PathName
from corral.server.portal import queries
from corral.server.portal.session import (
    SignInNeeded,
    Viewer,
    check_origin,
    page_csrf,
    read_form,
    safe_back,
    session_seconds,
    sign_in,
    signout_allowed,
)  # fmt: skip
from corral.server.services import clusters, jobs, metrics, outputs, sweeps, usage, workspaces
from corral.server.services.lookup import job_row
from corral.store.tables import TrialRow

HERE = Path(__file__).parent
STATIC = HERE / "static"
API = "/api/v1"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)
WEEK = 7 * 24 * 3600
Filter = Annotated[str, Query(max_length=64)]


# ---------------------------------------------------------------- rendering


@cache
def asset(name: str) -> str:
    """A static file's URL, its content's hash in it: browsers keep it until it changes."""
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def _when(value: datetime | float | None) -> str:
    if value is None:
        return ""
    at = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m"


def _since(start: datetime | float | None, end: datetime | float | None = None) -> str:
    if start is None:
        return ""
    begin = start.timestamp() if isinstance(start, datetime) else start
    stop = end.timestamp() if isinstance(end, datetime) else (end or time.time())
    return _duration(stop - begin)


templates.env.filters.update(when=_when, since=_since, duration=_duration, q=lambda v: quote(str(v), safe=""))
templates.env.globals.update(asset=asset, API=API)


def workspaces_of(request: Request, viewer: Principal) -> list[str]:
    """The workspaces where the user holds a role (an admin: all), as the API lists them."""
    ctx = request.app.state.context
    roles = None if viewer.is_admin else cached_roles(ctx, viewer.name)
    with ctx.db.read() as session:
        return [w.name for w in workspaces.list_workspaces(session, roles=roles)]


def render(request: Request, template: str, viewer: Principal, status: int = 200, **context: Any) -> HTMLResponse:
    """A page, or a part of one (a template named ``_…``, refreshed by htmx: no header, so no workspaces read)."""
    spaces = [] if template.startswith("_") else workspaces_of(request, viewer)
    base = {"viewer": viewer, "csrf": page_csrf(request), "workspaces": spaces, "ws": None, "access": None}
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


def error_page(request: Request, status: int, message: str) -> Response:
    """Every error of a page: a page of its own, never a stack trace (installed for errors.py's handlers)."""
    heading = {401: "Sign in", 403: "Not allowed", 404: "Not found", 422: "Not a valid address"}.get(status)
    context = {"heading": heading or f"Error {status}", "message": message, "viewer": None}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


async def in_workspace(ws: PathName, request: Request, viewer: Viewer) -> Access:
    """A reader of the workspace at least (404, as the API says, when the user holds no role in it)."""
    return await workspace_access(request.app.state.context, viewer, ws, "reader")


#: The signed-in user, a reader of the workspace of the page's path at least.
InWorkspace = Annotated[Access, Depends(in_workspace)]


def may_change(access: Access, submitted_by: str) -> bool:
    """What the API's ``check_job_change`` allows (terminating or deleting a job, a sweep)."""
    try:
        access.check_job_change(submitted_by=submitted_by, job="")
    except Forbidden:
        return False
    return True


def _page(request: Request, template: str, access: Access, **context: Any) -> HTMLResponse:
    assert access.principal is not None
    return render(request, template, access.principal, ws=access.workspace, access=access, **context)


# ---------------------------------------------------------------- signing in


@router.get("/signin")
def signin_page(request: Request, back: str = "/") -> HTMLResponse:
    return templates.TemplateResponse(request, "signin.html", {"back": safe_back(back), "error": None})


@router.post("/signin")
async def signin(request: Request) -> Response:
    check_origin(request)
    form = await read_form(request)
    back, token = safe_back(form.get("back")), form.get("token", "").strip()
    try:
        if not token:
            raise Unauthorized("give a token")
        principal = await sign_in(request, token)
    except Unauthorized as exc:
        context = {"back": back, "error": exc.message}
        return templates.TemplateResponse(request, "signin.html", context, status_code=401)
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=session_seconds(principal), httponly=True,
        samesite="strict", secure=request.url.scheme == "https", path="/",
    )  # fmt: skip
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    check_origin(request)
    if not signout_allowed(request, await read_form(request)):
        raise Forbidden("signing out needs the page's CSRF token")
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/")
def home(request: Request, viewer: Viewer) -> Response:
    """The first workspace the user holds a role in (``default`` when there)."""
    spaces = workspaces_of(request, viewer)
    if not spaces:
        message = (
            f"{viewer.name} holds a role in no workspace yet: an owner of one adds you (corral workspace add-member)"
        )
        return render(request, "error.html", viewer, heading="No workspace yet", message=message)
    return RedirectResponse(f"/w/{'default' if 'default' in spaces else spaces[0]}", status_code=303)


# ---------------------------------------------------------------- a workspace


@router.get("/w/{ws}")
def overview(request: Request, ctx: Ctx, access: InWorkspace) -> HTMLResponse:
    ws = str(access.workspace)
    with ctx.db.read() as session:
        cluster_list = clusters.list_clusters(session, workspace=ws)
        counts = queries.job_counts(session, ws)
        week = usage.workspace_usage(session, workspace=ws, since=time.time() - WEEK)
        recent = queries.job_page(session, ws, queries.JobFilter()).rows[:10]
    return _page(request, "overview.html", access, clusters=cluster_list, counts=counts, week=week, recent=recent)


@router.get("/w/{ws}/clusters/{name}")
def cluster_page(name: PathName, request: Request, ctx: Ctx, access: InWorkspace) -> HTMLResponse:
    ws = str(access.workspace)
    with ctx.db.read() as session:
        cluster = clusters.get_cluster(session, workspace=ws, name=name)
        nodes = clusters.list_nodes(session, workspace=ws, cluster=name)
    owner = access.role in ("owner", "admin")
    return _page(request, "cluster.html", access, cluster=cluster, nodes=nodes, owner=owner)


@router.get("/w/{ws}/jobs")
def jobs_page(
    request: Request,
    ctx: Ctx,
    access: InWorkspace,
    state: Filter = "",
    experiment: Filter = "",
    user: Filter = "",
    cluster: Filter = "",
    text: Filter = "",
    before: Annotated[int | None, Query(ge=0, le=2**31)] = None,
    after: Annotated[int | None, Query(ge=0, le=2**31)] = None,
    part: str = "",
) -> HTMLResponse:
    """Newest first, 50 a page by keyset (``before`` or ``after`` a row id); ``part=rows``: the rows alone, for
    the page's refresh every few seconds."""
    ws = str(access.workspace)
    f = queries.JobFilter(state=state, experiment=experiment, user=user, cluster=cluster, text=text.strip())
    with ctx.db.read() as session:
        page = queries.job_page(session, ws, f, before=before, after=after)
        choices = queries.filter_choices(session, ws) if part != "rows" else {}
    filters = {k: v for k, v in vars(f).items() if v}
    here = {**filters, **({"before": before} if before is not None else {}), **({"after": after} if after else {})}
    url = f"/w/{ws}/jobs?"
    context = {"page": page, "filters": filters, "choices": choices, "f": f,
               "rows_url": url + urlencode({**here, "part": "rows"}),
               "older_url": url + urlencode({**filters, "before": page.older}) if page.older else None,
               "newer_url": url + urlencode({**filters, "after": page.newer}) if page.newer else None}  # fmt: skip
    return _page(request, "_job_rows.html" if part == "rows" else "jobs.html", access, **context)


@router.get("/w/{ws}/e/{exp}/jobs/{name}")
def job_page(
    exp: PathName,
    name: PathName,
    request: Request,
    ctx: Ctx,
    access: InWorkspace,
    output: str | None = None,
    path: str = "",
    part: str = "",
) -> HTMLResponse:
    """A job: its state and attempts (``part=head`` alone, refreshed while it runs), spec, logs, outputs and
    metrics."""
    ws = str(access.workspace)
    with ctx.db.read() as session:
        job = jobs.get_job(session, workspace=ws, experiment=exp, name=name)
        events = jobs.list_events(session, workspace=ws, experiment=exp, name=name)
        context: dict[str, Any] = {"job": job, "events": events, "exp": exp}
        if part != "head":
            row, _ = job_row(session, ws, exp, name)
            context["series"] = metrics.list_series(session, row)
            try:
                context["files"] = outputs.list_files(session, workspace=ws, experiment=exp, job=name, output=output,
                                                      path=path, cursor=None, limit=200)  # fmt: skip
                context["files_error"] = None
            except CorralError as exc:
                context["files"], context["files_error"] = None, exc.message
    base = f"{API}/workspaces/{ws}/experiments/{exp}/jobs/{name}"
    context.update(
        base=base, output=output, path=path, can_change=may_change(access, job.submitted_by),
        spec_yaml=yaml.safe_dump(job.spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
        if job.spec else "",
    )  # fmt: skip
    return _page(request, "_job_head.html" if part == "head" else "job.html", access, **context)


@router.get("/w/{ws}/metrics")
def metrics_page(
    request: Request, ctx: Ctx, access: InWorkspace, job: Annotated[tuple[str, ...], Query(max_length=20)] = ()
) -> HTMLResponse:
    """Charts of the jobs' series (``job=EXPERIMENT/NAME``, several overlaid), drawn from the API's downsampled
    points (rank 0 of each job's latest attempt)."""
    ws = str(access.workspace)
    charts: dict[str, list[dict[str, str]]] = {}
    shown, missing = [], []
    with ctx.db.read() as session:
        for ref in job:
            exp, _, name = ref.partition("/")
            try:
                row, _ = job_row(session, ws, exp, name)
            except CorralError:
                missing.append(ref)
                continue
            shown.append(ref)
            for metric in sorted({s.name for s in metrics.list_series(session, row) if s.rank == 0}):
                url = f"{API}/workspaces/{ws}/experiments/{exp}/jobs/{name}/metrics/{quote(metric)}?max_points=1000"
                charts.setdefault(metric, []).append({"label": ref, "url": url})
    data = [{"metric": metric, "series": series} for metric, series in charts.items()]
    return _page(request, "metrics.html", access, charts=data, shown=shown, missing=missing)


@router.get("/w/{ws}/sweeps")
def sweeps_page(request: Request, ctx: Ctx, access: InWorkspace) -> HTMLResponse:
    with ctx.db.read() as session:
        found = queries.workspace_sweeps(session, str(access.workspace))
    return _page(request, "sweeps.html", access, sweeps=found)


@router.get("/w/{ws}/e/{exp}/sweeps/{name}")
def sweep_page(exp: PathName, name: PathName, request: Request, ctx: Ctx, access: InWorkspace) -> HTMLResponse:
    """Trials best first, the objective over trials, and parallel coordinates of parameters against it."""
    ws = str(access.workspace)
    with ctx.db.read() as session:
        sweep = sweeps.get_sweep(session, workspace=ws, experiment=exp, name=name)
        row = sweeps.sweep_row(session, ws, exp, name)
        job_ids = dict(
            session.execute(select(TrialRow.number, TrialRow.job_id).where(TrialRow.sweep_id == row.id)).all()
        )
        metric = sweep.spec["objective"]["metric"]
        last = queries.last_objective(session, [i for i in job_ids.values() if i is not None], metric)
    chart = {
        "metric": metric,
        "mode": sweep.spec["objective"].get("mode", "min"),
        "parameters": {key: p.get("type") for key, p in sweep.spec["parameters"].items()},
        "trials": [
            {"number": t.number, "params": t.params, "state": t.state,
             "value": t.value if t.value is not None else last.get(job_ids.get(t.number) or -1)}
            for t in sweep.trials
        ],
    }  # fmt: skip
    can_change = may_change(access, sweep.created_by)
    return _page(request, "sweep.html", access, sweep=sweep, exp=exp, chart=chart, can_change=can_change)


@router.get("/w/{ws}/usage")
def usage_page(request: Request, ctx: Ctx, access: InWorkspace) -> HTMLResponse:
    ws = str(access.workspace)
    with ctx.db.read() as session:
        week = usage.workspace_usage(session, workspace=ws, since=time.time() - WEEK)
        total = usage.workspace_usage(session, workspace=ws)
    return _page(request, "usage.html", access, week=week, total=total)


# ---------------------------------------------------------------- wiring


class _Static(StaticFiles):
    """Assets with their content's hash in the URL: cached for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", _Static(directory=STATIC), name="static")
    app.state.error_page = error_page

    @app.exception_handler(SignInNeeded)
    async def _sign_in(_request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse(f"/signin?{urlencode({'back': exc.back})}", status_code=303)
