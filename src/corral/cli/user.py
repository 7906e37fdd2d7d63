"""``corral user …`` (admins, but for one's own token)."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import OutputOpt, YesOpt, client, confirm, console, emit, err_console, make_table, when
from corral.client import config
from corral.core.units import parse_duration

app = typer.Typer(help="Users: who submits jobs (each job records it), each with a token.", no_args_is_help=True)


ExpiresOpt = Annotated[
    str | None, typer.Option("--expires", help="The token works this long (90d, 12h); default: until revoked.")
]


def _seconds(expires: str | None) -> float | None:
    return None if expires is None else parse_duration(expires)


@app.command("create")
def create(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="Allowed everything: users, workspaces, quotas.")] = False,
    unix_user: Annotated[
        str | None, typer.Option("--unix-user", help="An existing account their jobs run as (server as root).")
    ] = None,
    expires: ExpiresOpt = None,
) -> None:
    """Create a user and print its token (shown once; give it to the user as CORRAL_TOKEN). They see no
    workspace until an owner adds them: corral workspace member add WS USER."""
    user = client().create_user(name, admin=admin, unix_user=unix_user, expires_in=_seconds(expires))
    console.print(user.token)


@app.command("list")
def list_(output: OutputOpt = "table") -> None:
    """List users."""
    users = client().list_users()
    rows = [
        (u.name, u.admin, u.unix_user or "-", when(u.token_expires_at) if u.token_expires_at else "never",
         when(u.created_at))
        for u in users
    ]  # fmt: skip
    emit(users, output, make_table(["NAME", "ADMIN", "UNIX USER", "TOKEN EXPIRES", "CREATED"], rows))


@app.command("delete")
def delete(name: str, yes: YesOpt = False) -> None:
    """Remove a user: their token stops working at once (their jobs stay). Admins only; it asks first."""
    c = client()
    if not yes:
        confirm(f"Delete user {name!r}? Their token stops working now.")
    c.delete_user(name)
    console.print(f"deleted user {name}")


@app.command("token")
def token(
    name: Annotated[str | None, typer.Argument(help="The user (admins only); default: yourself.")] = None,
    expires: ExpiresOpt = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Only revoke the token; print no new one.")] = False,
) -> None:
    """Give a user a new token and print it (shown once); the old one stops working at once. With --revoke,
    the token stops working and no new one is made (a later `corral user token` makes one)."""
    c = client()
    who = name or c.whoami().name
    if revoke:
        c.revoke_token(who)
        console.print(f"revoked the token of {who}")
        return
    created = c.new_token(who, expires_in=_seconds(expires))
    console.print(created.token)
    source = config.setting_source("token")
    if name is None and source is not None:
        err_console.print(f"your old token (from {source}) no longer works: put this one there")


#: ``corral token new|revoke``: the same as ``corral user token [--revoke]``, where people look for it.
token_app = typer.Typer(help="Tokens: a new one for you (or, for admins, anyone), or revoke one.", no_args_is_help=True)
token_app.command("new")(token)


@token_app.command("revoke")
def revoke_token(
    name: Annotated[str | None, typer.Argument(help="The user (admins only); default: yourself.")] = None,
) -> None:
    """Revoke a user's token: it stops working at once, and no new one is made (`corral token new` makes one)."""
    token(name, expires=None, revoke=True)


def audit(
    user: Annotated[str | None, typer.Option("--user", "-u", help="This user's requests only.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="How many, newest first.")] = 50,
    output: OutputOpt = "table",
) -> None:
    """Who asked to change what, when and from where (allowed or refused), newest first. Admins only."""
    entries = client().audit(user=user, limit=limit)
    rows = [(when(e.at), e.user, e.method, e.path, e.status, e.client) for e in entries]
    emit(entries, output, make_table(["WHEN", "USER", "METHOD", "PATH", "STATUS", "FROM"], rows))
