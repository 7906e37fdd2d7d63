"""``corral volume …``: a workspace's buckets, containers and shared directories."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import (
    OutputOpt,
    WorkspaceOpt,
    YesOpt,
    client,
    confirm,
    console,
    emit,
    make_table,
    size_text,
    when,
)
from corral.core.errors import InvalidRequest

app = typer.Typer(
    help="Volumes: where a workspace's data lives (S3, Azure Blob, shared directories).", no_args_is_help=True
)

#: How a path in a volume is written on the command line (as in a job's inputs).
SCHEME = "vol://"


def _where(volume: dict[str, object]) -> str:
    spec = volume
    if spec.get("kind") == "s3":
        return f"s3://{spec['bucket']}/{spec.get('prefix', '')}" + (
            f" at {spec['endpoint_url']}" if spec.get("endpoint_url") else ""
        )
    if spec.get("kind") == "azureblob":
        return f"az://{spec['container']}/{spec.get('prefix', '')} ({spec['account']})"
    return str(spec.get("path", ""))


@app.command("create")
def create(
    file: Annotated[Path, typer.Option("--file", "-f", help="Volume spec (YAML or JSON): docs/data.md.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Create a volume from a spec file (its store is reached once first, with its credentials)."""
    console.print(client(workspace).create_volume(file).name)


@app.command("list")
def list_(workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """List the workspace's volumes (never their credentials)."""
    volumes = client(workspace).list_volumes()
    rows = [(v.name, v.kind, _where(v.spec), v.created_by, when(v.created_at)) for v in volumes]
    emit(volumes, output, make_table(["NAME", "KIND", "WHERE", "CREATED BY", "CREATED"], rows))


@app.command("show")
def show(name: str, workspace: WorkspaceOpt = None, output: OutputOpt = "table") -> None:
    """A volume's spec (without its credentials)."""
    volume = client(workspace).get_volume(name)
    rows = [(k, str(v)) for k, v in volume.spec.items()] + [("credentials", "yes" if volume.has_credentials else "no")]
    emit(volume, output, make_table(["FIELD", "VALUE"], rows))


@app.command("delete")
def delete(name: str, yes: YesOpt = False, workspace: WorkspaceOpt = None) -> None:
    """Forget a volume (its data stays in its store; it asks first, unless --yes)."""
    if not yes:
        confirm(f"Delete volume {name!r}? Its data stays where it is; jobs that read from it will fail.")
    client(workspace).delete_volume(name)
    console.print(f"deleted volume {name}")


def files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def split(target: str) -> tuple[str, str]:
    """``NAME/path`` or ``vol://NAME/path`` -> (NAME, path)."""
    name, _, path = target.removeprefix(SCHEME).partition("/")
    if not name:
        raise InvalidRequest(f"{target!r}: give a volume, as NAME/path or {SCHEME}NAME/path")
    return name, path


@app.command("ls")
def ls(
    target: Annotated[str, typer.Argument(help="VOLUME or VOLUME/PATH (vol:// in front is allowed).")],
    workspace: WorkspaceOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List the files and folders at a path of a volume."""
    name, path = split(target)
    entries = list(client(workspace).list_volume_files(name, path))
    rows = [
        (e.name + ("/" if e.is_dir else ""), "" if e.is_dir else size_text(e.size), when(e.modified_at))
        for e in entries
    ]
    emit(entries, output, make_table(["NAME", "SIZE", "MODIFIED"], rows))


@app.command("cp")
def cp(
    source: Annotated[str, typer.Argument(help=f"A local file or directory, or {SCHEME}VOLUME/PATH.")],
    destination: Annotated[str, typer.Argument(help=f"{SCHEME}VOLUME/PATH, or a local path.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Copy files up to a volume or down from it (directories with everything in them)."""
    c = client(workspace)
    if source.startswith(SCHEME) == destination.startswith(SCHEME):
        raise InvalidRequest(f"copy between a local path and a volume: one of the two starts with {SCHEME}")
    if destination.startswith(SCHEME):
        name, path = split(destination)
        written = c.upload_to_volume(name, source, path)
        console.print(f"copied {files(len(written))} to {SCHEME}{name}/{path}")
    else:
        name, path = split(source)
        saved = c.download_from_volume(name, path, destination)
        console.print(f"copied {files(len(saved))} to {destination}")
