"""What every command shares: options, the client, output as tables or JSON, finding a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from corral.client import config
from corral.client.client import Client
from corral.core.errors import CorralError, ServerUnavailable

# Piped output is read by people in logs and by scripts: no 80-column squeeze there.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

WorkspaceOpt = Annotated[str, typer.Option("--workspace", "-w", help="Workspace.", envvar="CORRAL_WORKSPACE")]
ExperimentOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        "-e",
        help="Experiment (default: CORRAL_EXPERIMENT; a job named alone is found in any experiment).",
        envvar="CORRAL_EXPERIMENT",
    ),
]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json or yaml.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def client(workspace: str = "default", experiment: str | None = None) -> Client:
    ensure_server()
    return Client(workspace=workspace, experiment=experiment)


def server_health(url: str) -> dict[str, Any] | None:
    """What ``/api/v1/health`` says at ``url``, or None when nothing answers there."""
    with Client(server=url, token="") as probe:
        try:
            return probe.health()
        except ServerUnavailable:
            return None


def ensure_server() -> None:
    """If nothing answers at CORRAL_SERVER and it is local, start a server in the background."""
    url = config.server_url()
    if server_health(url) is not None:
        return
    parsed = urlparse(url)
    if parsed.hostname not in LOCAL_HOSTS:
        raise ServerUnavailable(f"cannot reach the Corral server at {url}")
    running = home_server(config.home())
    if running is not None:  # a typo in CORRAL_SERVER must not start a second, empty server
        pid, where = running
        raise ServerUnavailable(
            f"nothing answers at {url} (CORRAL_SERVER), but the server of home {config.home()} runs at {where} "
            f"(pid {pid}): point CORRAL_SERVER there"
        )
    port = parsed.port or 8765
    pid = start_background_server(home=config.home(), host=parsed.hostname or "127.0.0.1", port=port)
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
        raise CorralError(f"a Corral server already runs at {url} (pid {running['pid']})")
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
        health = server_health(url)
        if health is not None and health["pid"] == process.pid:
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


def confirm(question: str) -> None:
    """Ask before something that cannot be undone; without a terminal to ask on, refuse (``--yes`` skips)."""
    if not sys.stdin.isatty():
        raise CorralError(f"{question} Not asked without a terminal: add --yes")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)
