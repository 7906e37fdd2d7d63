"""What a job's processes start from on a machine, whichever backend starts them: the machine's environment
without the server's settings or Corral's own virtualenv, and the folder that makes ``corral.runtime`` importable
without the rest of Corral."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

from corral.launch.layout import RUNTIME_FOLDER

#: Variables of the server's environment a job never sees: the server's own settings (its home, its database
#: URL with any password, a token) and the job variables of Corral and Batch AI, which the planner sets itself.
PRIVATE_PREFIXES = ("CORRAL_", "AZ_BATCHAI_")


def server_environment() -> dict[str, str]:
    """What jobs start from: the machine's environment without the server's settings (``PRIVATE_PREFIXES``) and
    without Corral's own virtual environment — a job gets its packages from its ``environment``, or, with
    ``environment: server``, from Corral's (``CORRAL_PYTHON``'s folder put back first on PATH by the plan)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRIVATE_PREFIXES)}
    if sys.prefix != sys.base_prefix:  # Corral runs in a virtual environment: none of it reaches jobs
        own = os.path.realpath(os.path.dirname(sys.executable))
        kept = [p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != own]
        env["PATH"] = os.pathsep.join(kept)
        if env.get("VIRTUAL_ENV") and os.path.realpath(env["VIRTUAL_ENV"]) == os.path.realpath(sys.prefix):
            del env["VIRTUAL_ENV"]
    env["CORRAL_PYTHON"] = sys.executable  # what runs Corral's own steps on the node (staging, environments)
    return env


#: What ``import corral.runtime`` needs (the standard library besides).
RUNTIME_FILES = ("__init__.py", "runtime.py", "launch/__init__.py", "launch/layout.py")


def runtime_folder(cache: Path) -> Path:
    """In the machine's cache (``NodeProvider.input_cache``), a folder with only ``corral.runtime`` and what it
    imports, copied from this Corral at each start (each file replaced whole) and readable by every account: the
    plan puts it on the PYTHONPATH of a job without an environment, and an environment without a Corral of its
    own names it in a ``.pth``; none of Corral's dependencies come along."""
    if not cache.exists():
        with contextlib.suppress(FileExistsError):
            cache.mkdir(parents=True)
            cache.chmod(0o1777)  # every account keeps its own cache in it (corral.data.stage)
    folder = cache / RUNTIME_FOLDER
    source = Path(__file__).resolve().parents[2]  # this Corral's package folder
    for name in RUNTIME_FILES:
        target = folder / "corral" / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        shutil.copyfile(source / name, partial)
        partial.chmod(0o644)
        os.replace(partial, target)
    for path in (folder, *(p for p in folder.rglob("*") if p.is_dir())):
        path.chmod(0o755)
    return folder
