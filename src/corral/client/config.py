"""Where the client finds the server and its token: ``CORRAL_SERVER``, ``CORRAL_TOKEN``, ``CORRAL_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8765"


def home() -> Path:
    return Path(os.environ.get("CORRAL_HOME") or "~/.corral").expanduser()


def server_url() -> str:
    return (os.environ.get("CORRAL_SERVER") or DEFAULT_SERVER).rstrip("/")


def token() -> str | None:
    """``CORRAL_TOKEN``, else the admin token the local server wrote to ``$CORRAL_HOME/token``."""
    if os.environ.get("CORRAL_TOKEN"):
        return os.environ["CORRAL_TOKEN"]
    path = home() / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
