"""Where the server gets its backend: the one module that imports a concrete one (``tests/unit/test_imports.py``
holds every other module to the interfaces of :mod:`corral.backends.base`)."""

from __future__ import annotations

from pathlib import Path

from corral.backends.base import Backends


def create_backends(*, home: Path, code_dir: Path, isolate_users: bool = False) -> Backends:
    """The local backend: nodes are slices of this machine, their files under ``home/nodes``; with
    ``isolate_users``, users' processes run as their own Unix accounts."""
    from corral.backends.local.accounts import LocalAccounts
    from corral.backends.local.backend import LocalBackend
    from corral.backends.local.nodes import LocalNodes

    nodes = LocalNodes(home)
    return Backends(
        executor=LocalBackend(code_dir=code_dir, home=home),
        nodes=nodes,
        access=nodes,
        accounts=LocalAccounts() if isolate_users else None,
    )
