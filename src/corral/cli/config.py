"""``corral config …``: named profiles (server, token, workspace, experiment) in the client's config file."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from corral.cli.common import OutputOpt, console, emit, make_table
from corral.client import config
from corral.core.errors import InvalidRequest, NotFound

app = typer.Typer(
    help="Profiles: which server, token, workspace and experiment commands use (`config use NAME` switches).",
    no_args_is_help=True,
)


@app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="Profile name (created if new).")],
    server: Annotated[str | None, typer.Option(help="Server URL, e.g. http://gpu-box:8765.")] = None,
    token: Annotated[str | None, typer.Option(help="Token (stored in a file only you can read).")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="Default workspace.")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="Default experiment.")] = None,
    unset: Annotated[
        list[str] | None, typer.Option(help="Remove a setting: server, token, workspace or experiment.")
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Make it the current profile.")] = False,
) -> None:
    """Create a profile or change some of its settings."""
    data = config.load_config()
    values = data.profiles[name].model_dump() if name in data.profiles else {}
    given = {"server": server, "token": token, "workspace": workspace, "experiment": experiment}
    values.update({k: v for k, v in given.items() if v is not None})
    for field in unset or []:
        if field not in given:
            raise typer.BadParameter(f"must be one of {', '.join(given)}, got {field!r}", param_hint="--unset")
        values.pop(field, None)
    try:
        data.profiles[name] = config.Profile.model_validate(values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise InvalidRequest(f"--{problem['loc'][0]}: {problem['msg'].removeprefix('Value error, ')}") from None
    if use or data.current is None:
        data.current = name
    path = config.save_config(data)
    console.print(f"profile {name} saved in {path}" + (" (current)" if data.current == name else ""))


@app.command("use")
def use(name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    """Make a profile the current one."""
    data = config.load_config()
    if name not in data.profiles:
        known = ", ".join(sorted(data.profiles)) or "none yet: `corral config set NAME --server URL`"
        raise NotFound(f"no profile {name!r} (profiles: {known})")
    data.current = name
    config.save_config(data)
    console.print(f"using profile {name}")


@app.command("list")
def list_(output: OutputOpt = "table") -> None:
    """List profiles; the current one is marked with *."""
    data = config.load_config()
    rows = [
        ("*" if n == data.current else "", n, p.server or "", p.workspace or "", p.experiment or "",
         "set" if p.token else "")
        for n, p in sorted(data.profiles.items())
    ]  # fmt: skip
    shown = {n: {**p.model_dump(exclude_none=True, exclude={"token"}), "token": bool(p.token)}
             for n, p in data.profiles.items()}  # fmt: skip
    emit({"current": data.current, "profiles": shown}, output,
         make_table(["", "NAME", "SERVER", "WORKSPACE", "EXPERIMENT", "TOKEN"], rows))  # fmt: skip


@app.command("show")
def show(output: OutputOpt = "table") -> None:
    """The settings commands use now, and where each comes from (option, environment, profile or default)."""
    values = {
        "server": config.server_url(),
        "workspace": config.workspace(),
        "experiment": config.experiment() or "",
        "token": "set" if config.token() else "",
    }
    sources = {field: config.setting_source(field) or "default" for field in values}
    if values["token"] and sources["token"] == "default":
        sources["token"] = f"{config.home()}/token"
    rows = [(field, value, sources[field]) for field, value in values.items()]
    emit({"profile": config.active_profile_name(), "config_file": str(config.config_path()),
          "settings": {f: {"value": v, "from": sources[f]} for f, v in values.items()}}, output,
         make_table(["SETTING", "VALUE", "FROM"], rows))  # fmt: skip


@app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    """Remove a profile."""
    data = config.load_config()
    if data.profiles.pop(name, None) is None:
        raise NotFound(f"no profile {name!r}")
    if data.current == name:
        data.current = None
    config.save_config(data)
    console.print(f"deleted profile {name}")
