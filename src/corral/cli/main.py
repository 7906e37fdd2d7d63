"""The ``corral`` console script."""

from __future__ import annotations

import sys

import typer

from corral.cli import cluster, experiment, job, server, user, workspace
from corral.core.errors import CorralError

app = typer.Typer(
    help="Corral: train and test machine-learning models on your own machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(server.app, name="server")
app.add_typer(cluster.app, name="cluster")
app.add_typer(experiment.app, name="experiment")
app.add_typer(job.app, name="job")
app.add_typer(workspace.app, name="workspace")
app.add_typer(user.app, name="user")
app.command("usage")(workspace.usage)


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
