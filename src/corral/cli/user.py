"""``corral user …`` (admins only)."""

from __future__ import annotations

import typer

from corral.cli.common import OutputOpt, client, console, emit, make_table, when

app = typer.Typer(help="Users: who submits jobs (each job records it), each with a token.", no_args_is_help=True)


@app.command("create")
def create(name: str, admin: bool = typer.Option(False, "--admin", help="Allowed to manage users and quotas.")) -> None:
    """Create a user and print its token (shown once; give it to the user as CORRAL_TOKEN)."""
    user = client().create_user(name, admin=admin)
    console.print(user.token)


@app.command("list")
def list_(output: OutputOpt = "table") -> None:
    """List users."""
    users = client().list_users()
    emit(
        users, output, make_table(["NAME", "ADMIN", "CREATED"], [(u.name, u.admin, when(u.created_at)) for u in users])
    )
