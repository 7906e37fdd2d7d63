"""``python -m corral.server [--home DIR] [--host H] [--port N]``: run the server in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from corral.server.process import AlreadyRunning, serve
from corral.server.settings import InvalidSettings, get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.server")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        serve(get_settings(**overrides))
    except (AlreadyRunning, InvalidSettings) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
