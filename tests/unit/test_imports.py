"""The layers of ``src/corral`` and the backend seam, held by reading every module's imports (lazy ones too).

Only :mod:`corral.backends.registry` imports a concrete backend; the scheduler, the services and the planners
know :mod:`corral.backends.base` alone, so a new backend plugs in without touching them (issue 11).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "corral"

#: What each part may import besides itself (concrete backends are ``corral.backends.<name>``).
ALLOWED: dict[str, set[str]] = {
    "corral": {"corral.client"},
    "corral.core": set(),
    "corral.launch": {"corral.core"},
    "corral.runtime": {"corral.launch", "corral.core"},
    "corral.storage": {"corral.core"},
    "corral.store": {"corral.core"},
    # Volumes and staging: the stores (on the server and the nodes), and which volume a job's input is in.
    "corral.data": {"corral.core", "corral.store"},
    # Job environments: built on each node with uv, in the machine's cache (``corral.data.stage``'s).
    "corral.envs": {"corral.core", "corral.data", "corral.launch"},
    "corral.backends": set(),
    "corral.backends.base": {"corral.core", "corral.launch"},
    "corral.backends.registry": {"corral.backends.base", "corral.backends.local", "corral.backends.ray"},
    "corral.backends.local": {"corral.backends.base", "corral.core", "corral.launch"},
    # The Ray backend runs the local backend's wrapper, watcher and reaper on each machine.
    "corral.backends.ray": {"corral", "corral.backends.base", "corral.backends.local", "corral.core", "corral.launch"},
    "corral.scheduler": {"corral.backends.base", "corral.core", "corral.data", "corral.launch", "corral.store"},
    "corral.server": {
        "corral",
        "corral.backends.base",
        "corral.backends.registry",
        "corral.core",
        "corral.data",
        "corral.launch",
        "corral.scheduler",
        "corral.storage",
        "corral.store",
    },
    "corral.client": {"corral.core", "corral.storage"},
    "corral.cli": {"corral", "corral.client", "corral.core", "corral.server"},
}


def part(module: str) -> str:
    """``corral.backends.local.nodes`` -> ``corral.backends.local``; ``corral.server.app`` -> ``corral.server``."""
    depth = 3 if module.startswith("corral.backends.") else 2
    return ".".join(module.split(".")[:depth])


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("corral"):
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("corral"))
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(("corral", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        out.append((name, path))
    return out


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_each_module_imports_only_what_its_layer_may(module: str, path: Path) -> None:
    own = part(module)
    assert own in ALLOWED, f"{module}: a new part of the tree; say in ALLOWED what it may import"
    wrong = sorted(t for t in imports(path) if part(t) != own and part(t) not in ALLOWED[own])
    assert not wrong, f"{module} imports {wrong}; {own} may import only {sorted(ALLOWED[own])}"


def test_the_check_would_catch_a_concrete_backend_in_the_scheduler(tmp_path: Path) -> None:
    leak = tmp_path / "leak.py"
    leak.write_text("def f():\n    from corral.backends.local.resources import LOCAL_IP\n")
    assert part(next(iter(imports(leak)))) not in ALLOWED["corral.scheduler"]


def test_routers_leave_side_effects_to_the_services() -> None:
    """Routers parse, authorise and call a service: the loop, the name cache, the admission limits and the backend
    are the services' to reach (``services/commands.py``), after their transaction commits."""
    reached = []
    for path in sorted((SRC / "server" / "routers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"controller", "names", "backends", "admission"}
                and isinstance(node.value, ast.Name)
                and node.value.id == "ctx"
            ):
                reached.append(f"{path.name}:{node.lineno} ctx.{node.attr}")
    assert not reached, reached
