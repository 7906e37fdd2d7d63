"""Secret values at rest: a job's ``secrets`` are stored encrypted (Fernet, from ``cryptography``), with a key
kept in the server's home (``secrets.key``, mode 0600). The column type does it on every write and read, so no
caller handles ciphertext; a value stored before encryption (no ``fernet:`` prefix) reads as it was and is sealed
by :func:`seal_stored` at the next start.

Whoever holds the database alone learns the secrets' names, not their values; whoever holds the home as well
(the server's user, and so, until jobs run as their own users, the jobs) can read them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import JSON, Dialect, text, update
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

PREFIX = "fernet:"
#: What a value that the key cannot open reads as (a lost or replaced key): never the ciphertext.
UNREADABLE = "<sealed with another key>"

_fernet: Fernet | None = None


def use_key_file(path: Path) -> None:
    """Seal and open with the key in ``path``, made (mode 0600) the first time."""
    global _fernet
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
    _fernet = Fernet(path.read_bytes().strip())


def _key() -> Fernet:
    if _fernet is None:
        raise RuntimeError("no key for job secrets: the server sets one at start (corral.store.sealed.use_key_file)")
    return _fernet


def seal(value: str) -> str:
    return PREFIX + _key().encrypt(value.encode()).decode()


def unseal(value: str) -> str:
    if not value.startswith(PREFIX):
        return value  # stored before encryption
    try:
        return _key().decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        log.error("a job secret was sealed with another key (was %s replaced?)", "secrets.key")
        return UNREADABLE


class SealedSecrets(TypeDecorator[dict[str, Any]]):
    """A JSON object of secret values, each sealed in the database."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Dialect) -> dict[str, Any] | None:
        if not value:
            return value
        return {k: v if isinstance(v, str) and v.startswith(PREFIX) else seal(str(v)) for k, v in value.items()}

    def process_result_value(self, value: dict[str, Any] | None, dialect: Dialect) -> dict[str, Any] | None:
        if not value:
            return value
        return {k: unseal(v) if isinstance(v, str) else v for k, v in value.items()}


def seal_stored(session: Any) -> int:
    """Seal the secrets stored in plain text by an older version; how many jobs had some."""
    from corral.store.tables import JobRow

    # Only the jobs that have secrets: a start does not read every job's row.
    rows = session.execute(text("SELECT id, secrets FROM jobs WHERE CAST(secrets AS TEXT) NOT IN ('{}', 'null')")).all()
    sealed = 0
    for job_id, raw in rows:
        values = json.loads(raw) if isinstance(raw, str) else raw
        if values and any(not (isinstance(v, str) and v.startswith(PREFIX)) for v in values.values()):
            session.execute(update(JobRow).where(JobRow.id == job_id).values(secrets=values))
            sealed += 1
    return sealed
