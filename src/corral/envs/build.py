"""Build (or find) a job's environment on a node: ``python -m corral.envs.build``, in the job's prepare, after its
inputs are staged and before anything of the job runs.

What to build comes in ``CORRAL_ENVIRONMENT`` (JSON: the spec's ``python``, ``requirements``, ``packages`` and
index settings, the machine's cache folder, and the link the job's processes find it at). uv resolves and
installs — Corral writes no resolver or installer of its own. An environment is named by the hash of what makes
it (the interpreter asked for and the one found, the requirements' text, the packages, the index settings, the
platform, uv's version), so a second job asking for the same one reuses it: only its link is made.

An environment is built in place (its scripts' ``#!`` lines name its own path, so it cannot be moved once built)
and marked complete last (``.corral-complete``): one without the mark is a build that was killed, removed and
built again, never used. Builds of one environment on one machine wait for one another (a lock per hash).
A failure exits ``ENVIRONMENT_FAILED`` with uv's message in the prepare log: the attempt ends
``EnvironmentFailed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from corral.core.states import ENVIRONMENT_FAILED_EXIT as ENVIRONMENT_FAILED
from corral.data.stage import account_cache
from corral.launch.layout import ENVIRONMENT_DONE, RUNTIME_FOLDER

VARIABLE = "CORRAL_ENVIRONMENT"
COMPLETE = ".corral-complete"
#: ``spec-<hash of the spec>``: a link to the environment last built or found for that spec, which the plan's
#: shell step follows without starting Python (``corral.launch.common.environment_shortcut``).
SPEC_LINK = "spec-"
#: Past the machine's limit, only environments unused for this long go: a job that started with one keeps it.
EVICT_AFTER = 3600.0


def uv() -> str:
    """uv, from the node's Corral installation (the ``uv`` package ships its binary), else from PATH."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        from uv import find_uv_bin

        return str(find_uv_bin())
    found = shutil.which("uv")
    if found is None:
        raise FileNotFoundError("uv is not installed on this node (pip install uv)")
    return found


def uv_release(binary: str) -> str:
    """uv's version: its package's (no process), else what the binary says."""
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return f"uv {version('uv')}"
    return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "UV_NO_PROGRESS": "1"})
    if done.stdout:
        sys.stdout.write(done.stdout)
    if done.returncode != 0:
        message = done.stderr.strip() or f"exit code {done.returncode}"
        raise RuntimeError(message)
    return done.stderr


def index_options(spec: dict[str, Any]) -> list[str]:
    options = ["--no-index"] if spec.get("no_index") else []
    if spec.get("index_url"):
        options += ["--index-url", spec["index_url"]]
    for url in spec.get("extra_index_url") or []:
        options += ["--extra-index-url", url]
    for place in spec.get("find_links") or []:
        options += ["--find-links", place]
    return options


def environment_key(spec: dict[str, Any], requirements: str, interpreter: str, uv_version: str) -> str:
    what = {
        "python": spec.get("python"),
        "interpreter": interpreter,
        "requirements": requirements,
        "packages": sorted(spec.get("packages") or []),
        "index": index_options(spec),
        "platform": [platform.machine(), platform.libc_ver()[0], sys.platform],
        "uv": uv_version,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def find_interpreter(binary: str, python: str | None) -> str:
    """The interpreter for ``python`` (none: the node's own, the one under Corral's), as a path and version. The
    one under Corral's, where it is what is asked, costs no look-up; any other is found by uv."""
    base = getattr(sys, "_base_executable", sys.executable)
    mine = ".".join(str(part) for part in sys.version_info[:3])
    if python is None or python == base or (python[0].isdigit() and f"{mine}.".startswith(f"{python}.")):
        return f"{base} {sys.version.split()[0]}"
    argv = [binary, "python", "find", "--system", "--no-python-downloads"]  # not the server's virtualenv
    if python:
        argv.append(python)
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        asked = python or "python3"
        raise RuntimeError(f"no Python {asked} on this node: {done.stderr.strip().splitlines()[-1:] or ''}")
    path = done.stdout.strip()
    version = subprocess.run([path, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True)
    return f"{path} {version.stdout.strip()}"


def build(spec: dict[str, Any], requirements: str, target: Path, binary: str, interpreter: str) -> None:
    run([binary, "venv", "--quiet", "--no-python-downloads", "--python", interpreter.split()[0], str(target)])
    wanted = list(spec.get("packages") or [])
    if not wanted and not requirements:
        return
    argv = [binary, "pip", "install", "--python", str(target / "bin" / "python"), *index_options(spec), *wanted]
    if requirements:
        listed = target / "requirements.txt"
        listed.write_text(requirements)
        argv += ["-r", str(listed)]
    run(argv)


def add_runtime(target: Path, runtime: str) -> None:
    """Make ``corral.runtime`` importable in the environment (checkpoints, preemption notices), unless it has a
    Corral of its own: a ``.pth`` naming the machine's folder with only those modules (the backend keeps it)."""
    site = next(target.glob("lib/python*/site-packages"), None)
    if site is not None and not (site / "corral").exists():
        (site / "corral-runtime.pth").write_text(f"{runtime}\n")


def environments(cache: Path) -> list[dict[str, Any]]:
    """The account's complete environments on this machine: hash, interpreter, packages, size, last use."""
    found = []
    for folder in sorted((cache / str(os.getuid()) / "envs").glob("*")):
        mark = folder / COMPLETE
        if folder.is_symlink() or not folder.is_dir() or not mark.exists():
            continue
        made = json.loads(mark.read_text() or "{}")
        size = sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_dir())
        spec = made.get("spec") or {}
        found.append({
            "hash": folder.name, "interpreter": made.get("interpreter", ""), "packages": spec.get("packages", []),
            "requirements": spec.get("requirements"), "size": size, "last_used": folder.stat().st_mtime,
        })  # fmt: skip
    return found


def prune(cache: Path, older_than: float, *, limit: int | None = None, keep: str = "") -> list[str]:
    """Remove the account's environments not used for ``older_than`` seconds, least recently used first (with
    ``limit``: only until they hold at most that many bytes); never ``keep``, nor one being built (each one's lock
    is taken first). The hashes removed."""
    removed = []
    now = time.time()
    found = sorted(environments(cache), key=lambda e: e["last_used"])
    total = sum(e["size"] for e in found)
    envs = cache / str(os.getuid()) / "envs"
    for env in found:
        if limit is not None and total <= limit:
            break
        if env["hash"] == keep or now - env["last_used"] < older_than:
            continue
        with open(envs / f"{env['hash']}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a job is building or linking it now
            (envs / env["hash"] / COMPLETE).unlink(missing_ok=True)  # never half there: unmarked first
            shutil.rmtree(envs / env["hash"], ignore_errors=True)
        for pointer in envs.glob(f"{SPEC_LINK}*"):  # the shortcuts to it go with it
            if os.readlink(pointer) == env["hash"]:
                pointer.unlink(missing_ok=True)
        total -= env["size"]
        removed.append(env["hash"])
    return removed


def command(argv: list[str]) -> int:
    """``python -m corral.envs.build list|prune SECONDS``, on a node (``corral env``): JSON on stdout."""
    cache = Path(os.environ["CORRAL_CACHE_DIR"])
    if argv[:1] == ["list"]:
        print(json.dumps(environments(cache)))
        return 0
    if argv[:1] == ["prune"] and len(argv) == 2:
        print(json.dumps(prune(cache, float(argv[1]))))
        return 0
    print("usage: python -m corral.envs.build [list | prune SECONDS]", file=sys.stderr)
    return 2


def main() -> int:
    if len(sys.argv) > 1:
        return command(sys.argv[1:])
    order = json.loads(os.environ[VARIABLE])
    spec = order["spec"]
    started = time.monotonic()
    try:
        requirements = Path(spec["requirements"]).read_text() if spec.get("requirements") else ""
        binary = uv()
        uv_version = uv_release(binary)
        interpreter = find_interpreter(binary, spec.get("python"))
        key = environment_key(spec, requirements, interpreter, uv_version)
        envs = account_cache(Path(order["cache"])) / "envs"  # the account's own: nobody else writes into them
        envs.mkdir(exist_ok=True)
        target = envs / key
        with open(envs / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build of it at a time on this machine; the others wait
            if (target / COMPLETE).exists():
                os.utime(target)
                how = "cached"
            else:
                shutil.rmtree(target, ignore_errors=True)  # a build killed halfway: never used
                build(spec, requirements, target, binary, interpreter)
                add_runtime(target, str(Path(order["cache"]) / RUNTIME_FOLDER))
                made = {"interpreter": interpreter, "uv": uv_version, "spec": spec, "built_at": time.time()}
                (target / COMPLETE).write_text(json.dumps(made))
                how = "built"
    except Exception as exc:  # uv's message on one line: the job's error quotes the log's last line
        said = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{ENVIRONMENT_DONE}: could not build it: {said}", file=sys.stderr)
        return ENVIRONMENT_FAILED
    link = Path(order["link"])
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(target)
    if order.get("shortcut"):  # the next job of this spec finds it without this program (environment_shortcut)
        pointer = envs / f"{SPEC_LINK}{order['shortcut']}"
        with contextlib.suppress(FileNotFoundError):
            pointer.unlink()
        pointer.symlink_to(key)
    print(f"{ENVIRONMENT_DONE} {key[:12]} ({interpreter.split()[1]}): {how} in {time.monotonic() - started:.2f} s")
    if how == "built" and order.get("limit"):  # the account's environments past the machine's limit: LRU go
        for gone in prune(Path(order["cache"]), EVICT_AFTER, limit=int(order["limit"]), keep=key):
            print(f"corral: environment cache: removed {gone[:12]} (used least recently)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
