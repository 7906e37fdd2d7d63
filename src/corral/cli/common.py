"""What every command shares: options, the client, output as tables or JSON, finding a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from corral.client import config
from corral.client.client import Client
from corral.core.errors import CorralError, ServerUnavailable

# Piped output is read by people in logs and by scripts: no 80-column squeeze there.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

WorkspaceOpt = Annotated[
    str | None,
    typer.Option("--workspace", "-w", help="Workspace (default: CORRAL_WORKSPACE, else the profile's, else default)."),
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        "-e",
        help="Experiment (default: CORRAL_EXPERIMENT, else the profile's; a job named alone is found in any).",
    ),
]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json or yaml.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")]


def _complete(ctx: typer.Context, incomplete: str, names: Callable[[Client], Iterable[str]]) -> list[str]:
    """Names for shell completion, from the server if one answers within a second; never an error or a start."""
    try:
        with Client(workspace=ctx.params.get("workspace"), timeout=1.0, retries_when_limited=0) as c:
            return sorted({n for n in names(c) if n.startswith(incomplete)})
    except Exception:
        return []


def complete_job(ctx: typer.Context, incomplete: str) -> list[str]:
    return _complete(ctx, incomplete, lambda c: (j.name for j in c.list_jobs(all_experiments=True, prefix=incomplete)))


def complete_cluster(ctx: typer.Context, incomplete: str) -> list[str]:
    return _complete(ctx, incomplete, lambda c: (cl.name for cl in c.list_clusters()))


JobNameArg = Annotated[str, typer.Argument(help="Job name.", autocompletion=complete_job, show_default=False)]
ClusterNameArg = Annotated[
    str, typer.Argument(help="Cluster name.", autocompletion=complete_cluster, show_default=False)
]


def client(workspace: str | None = None, experiment: str | None = None) -> Client:
    ensure_server()
    return Client(workspace=workspace, experiment=experiment)


def server_health(url: str) -> dict[str, Any] | None:
    """What ``/api/v1/health`` says at ``url`` (with the version, pid and loop when the token is good), or None
    when nothing answers there."""
    with Client(server=url, token=config.token(url) or "") as probe:
        try:
            return probe.health()
        except ServerUnavailable:
            return None


def ensure_server() -> None:
    """If nothing answers at the default address, start a server there in the background. At any other address
    (a typo, a server that is down, a remote one) start nothing: say what answers where."""
    url = config.server_url()
    if server_health(url) is not None:
        return
    source = config.setting_source("server")
    if url != config.DEFAULT_SERVER:
        running = home_server(config.home())
        hint = (
            f"the server of home {config.home()} runs at {running[1]} (pid {running[0]})"
            if running is not None
            else f"start one with `corral server start --background --port {urlparse(url).port or 80}`"
        )
        raise ServerUnavailable(f"nothing answers at {url} (from {source}); {hint}")
    running = home_server(config.home())
    if running is not None:
        raise ServerUnavailable(
            f"nothing answers at {url}, but the server of home {config.home()} runs at {running[1]} "
            f"(pid {running[0]}): set CORRAL_SERVER={running[1]}"
        )
    parsed = urlparse(url)
    pid = start_background_server(home=config.home(), host=parsed.hostname or "127.0.0.1", port=parsed.port or 8765)
    err_console.print(f"started a Corral server at {url} (pid {pid}, home {config.home()})")


def home_server(home: Path) -> tuple[int, str] | None:
    """(pid, URL) of the server that runs with ``home``, from its pid file, when that process is alive."""
    try:
        pid_text, host, port = (home / "server.pid").read_text().split()[:3]
        pid = int(pid_text)
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid, f"http://{host}:{port}"


def start_background_server(*, home: Path, host: str, port: int, timeout: float = 60.0) -> int:
    url = f"http://{host}:{port}"
    running = server_health(url)
    if running is not None:
        raise CorralError(f"a Corral server already runs at {url} (pid {running.get('pid', 'unknown')})")
    other = home_server(home)
    if other is not None:
        raise CorralError(f"a Corral server already runs with home {home}, at {other[1]} (pid {other[0]})")
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")  # noqa: SIM115 - handed to the child
    argv = [sys.executable, "-m", "corral.server", "--home", str(home), "--host", host, "--port", str(port)]
    env = {**os.environ, "CORRAL_HOME": str(home)}
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=env)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (home / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise ServerUnavailable(f"the server exited at start: {' | '.join(tail)}")
        if server_health(url) is not None and home_server(home) == (process.pid, url):  # ours, not another's
            return process.pid
        time.sleep(0.1)
    raise ServerUnavailable(f"the server did not answer at {url} within {timeout:g}s; see {home / 'server.log'}")


def emit(data: Any, output: str, table: Table | None = None) -> None:
    if output in ("json", "yaml"):
        if isinstance(data, BaseModel):
            payload: Any = data.model_dump(mode="json")
        elif isinstance(data, list):
            payload = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
        else:
            payload = data
        if output == "json":
            typer.echo(json.dumps(payload, indent=2))
        else:
            typer.echo(yaml.safe_dump(payload, sort_keys=False, allow_unicode=True), nl=False)
    elif output == "table":
        if table is not None:
            console.print(table)
    else:
        raise typer.BadParameter(f"must be table, json or yaml, got {output!r}", param_hint="--output")


def make_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="fold" if column == "MESSAGE" else "ellipsis")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


def when(value: Any) -> str:
    return "" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


@contextmanager
def transfer_progress(what: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` for the SDK: a bar on a terminal's stderr from the first byte on, else one line
    on stderr when the transfer is over (nothing when no byte moved)."""
    moved = [0]
    bar: Progress | None = None
    task = None

    def update(done: int, total: int) -> None:
        nonlocal bar, task
        moved[0] = done
        if not err_console.is_terminal:
            return
        if bar is None:
            bar = Progress(TextColumn(what), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn(), console=err_console)  # fmt: skip
            bar.start()
            task = bar.add_task(what)
        assert task is not None
        bar.update(task, completed=done, total=total or None)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()
        elif moved[0]:
            err_console.print(f"{what}: {size_text(moved[0])}")


def confirm(question: str) -> None:
    """Ask before something that cannot be undone; without a terminal to ask on, refuse (``--yes`` skips)."""
    if not sys.stdin.isatty():
        raise CorralError(f"{question} Not asked without a terminal: add --yes")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)
