"""The ``corral`` console script."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

import corral
from corral.cli import cluster, env, experiment, job, server, sweep, user, volume, workspace
from corral.cli import config as config_cli
from corral.cli.common import OutputOpt, client, emit, make_table
from corral.client import config
from corral.core.errors import CorralError

app = typer.Typer(
    help="Corral: train and test machine-learning models on your own machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corral {corral.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", envvar="CORRAL_PROFILE", help="Config profile to use (corral config)."),
    ] = None,
) -> None:
    """Corral: train and test machine-learning models on your own machines."""
    config.choose_profile(profile)


@app.command("whoami")
def whoami(output: OutputOpt = "table") -> None:
    """The user your token belongs to, and the server it talks to."""
    me = client().whoami()
    emit(me, output, make_table(["USER", "ADMIN", "SERVER"], [(me.name, me.admin, config.server_url())]))


app.add_typer(server.app, name="server")
app.add_typer(cluster.app, name="cluster")
app.add_typer(experiment.app, name="experiment")
app.add_typer(job.app, name="job")
app.add_typer(sweep.app, name="sweep")
app.add_typer(workspace.app, name="workspace")
app.add_typer(volume.app, name="volume")
app.add_typer(env.app, name="env")
app.add_typer(user.app, name="user")
app.add_typer(user.token_app, name="token")
app.add_typer(config_cli.app, name="config")
app.command("usage")(workspace.usage)
app.command("audit")(user.audit)


def main() -> None:
    try:
        app()
    except CorralError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
