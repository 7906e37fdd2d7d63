"""``corral server start|stop|status``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import console, err_console, server_health, start_background_server
from corral.client import config
from corral.core.errors import CorralError

app = typer.Typer(help="Run the Corral server.", no_args_is_help=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", help="Server home (default $CORRAL_HOME or ~/.corral).")]


@app.command("start")
def start(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    home: HomeOpt = None,
    background: Annotated[bool, typer.Option("--background", help="Detach and return once it answers.")] = False,
) -> None:
    """Start the server (in the foreground unless --background)."""
    home = (home or config.home()).expanduser().resolve()
    if background:
        pid = start_background_server(home=home, host=host, port=port)
        console.print(f"Corral server running at http://{host}:{port} (pid {pid}, home {home})")
        return
    from corral.server.process import AlreadyRunning, serve
    from corral.server.settings import InvalidSettings, get_settings

    try:
        serve(get_settings(home=home, host=host, port=port))
    except (AlreadyRunning, InvalidSettings) as exc:
        raise CorralError(str(exc)) from None


def _pid(home: Path) -> int | None:
    try:
        return int((home / "server.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@app.command("stop")
def stop(home: HomeOpt = None) -> None:
    """Stop the server of this home. Running jobs keep running; a restarted server picks them up."""
    home = (home or config.home()).expanduser().resolve()
    pid = _pid(home)
    if pid is None:
        raise CorralError(f"no server is running with home {home}")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        (home / "server.pid").unlink(missing_ok=True)
        raise CorralError(f"no server is running with home {home} (removed a stale pid file)") from None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            console.print(f"stopped the server (pid {pid})")
            return
        time.sleep(0.1)
    raise CorralError(f"the server (pid {pid}) did not stop within 15s")


@app.command("status")
def status() -> None:
    """Whether a server answers at CORRAL_SERVER."""
    url = config.server_url()
    health = server_health(url)
    if health is None:
        err_console.print(f"no Corral server answers at {url}")
        raise typer.Exit(1)
    if "pid" not in health:  # a token this server does not know (or none) gets its status alone
        console.print(f"a Corral server answers at {url} ({health['status']})")
        raise typer.Exit(0 if health["status"] == "ok" else 1)
    console.print(f"Corral {health['version']} running at {url} (pid {health['pid']})")
    loop = health.get("loop") or {}
    if health.get("status") != "ok":
        why = f"unhealthy: its control loop is {loop.get('status')}"
        err_console.print(f"{why}: {loop['error']}" if loop.get("error") else why)
        raise typer.Exit(1)
