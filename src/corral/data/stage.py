"""Stage a job's inputs in on a node: ``python -m corral.data.stage``, the first step of the job's prepare.

What to stage comes in the variable ``CORRAL_STAGE_INPUTS`` (JSON: the machine's cache folder, its size limit,
and per input its store, its path there and where the job finds it). Each input is copied once into the
machine's cache, keyed by what it is — its objects' names, sizes and ETags (or modification times) — so an
unchanged input is not copied again, and a changed one is. A copy is made in a temporary folder and renamed
into place only when complete: a staging killed halfway leaves nothing that a later one would take for a copy.
The job finds each input at a fixed path (``CORRAL_INPUT_<ID>``), a link to its copy in the cache.

The cache is one folder per account (mode 0700) under the machine's cache folder; when it holds more than the
limit, the copies used least recently go (never one this staging uses).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.data.stores import Store

VARIABLE = "CORRAL_STAGE_INPUTS"
#: A copy being made: ``.partial-<key>-<pid>``; a finished one is the key alone.
PARTIAL = ".partial-"


@dataclass(frozen=True)
class Remote:
    path: str
    size: int
    identity: str


def listing(fs: Any, path: str) -> tuple[bool, list[Remote]]:
    """Whether ``path`` is one object (else a folder), and every object it holds with what identifies it."""
    info = fs.info(path)
    if info.get("type") == "file":
        return True, [remote(info)]
    found = fs.find(path, detail=True)
    return False, sorted((remote(i) for i in found.values() if i.get("type") == "file"), key=lambda r: r.path)


def remote(info: dict[str, Any]) -> Remote:
    identity = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("last_modified")
    if identity is None:
        identity = info.get("mtime")
    return Remote(info["name"], int(info.get("size") or 0), str(identity))


def cache_key(store: Store, path: str, objects: list[Remote]) -> str:
    where = {
        "protocol": store.protocol,
        "endpoint": store.options.get("endpoint_url") or _blob_endpoint(store.options.get("connection_string", "")),
        "path": path,
    }
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode())
    for item in objects:
        digest.update(f"\0{item.path}\0{item.size}\0{item.identity}".encode())
    return digest.hexdigest()[:40]


def _blob_endpoint(connection: str) -> str:
    parts = dict(p.split("=", 1) for p in connection.split(";") if "=" in p)
    return parts.get("BlobEndpoint", "")


def account_cache(root: Path) -> Path:
    """This account's own cache folder (the machine's folder is open to every account, like /tmp)."""
    if not root.exists():
        with contextlib.suppress(FileExistsError):
            root.mkdir(parents=True)
            os.chmod(root, 0o1777)
    mine = root / str(os.getuid())
    mine.mkdir(mode=0o700, exist_ok=True)
    return mine


@dataclass(frozen=True)
class Staged:
    #: The copy's folder in the cache.
    entry: Path
    #: Where the job finds it: the folder, or the one file in it (an input that is one object).
    target: Path
    cached: bool
    objects: list[Remote]


def stage_input(fs: Any, store: Store, path: str, cache: Path) -> Staged:
    """The copy of ``path`` in ``cache``, made if missing."""
    single, objects = listing(fs, path)
    if not objects:
        raise FileNotFoundError(f"{path} holds no files")
    entry = cache / cache_key(store, path, objects)
    target = entry / objects[0].path.rsplit("/", 1)[-1] if single else entry
    if entry.is_dir():
        os.utime(entry)  # used now: the last to go
        return Staged(entry, target, True, objects)
    partial = cache / f"{PARTIAL}{entry.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    base = path.rsplit("/", 1)[0] if single else path.rstrip("/")
    locals_ = [str(partial / item.path[len(base) :].lstrip("/")) for item in objects]
    for folder in {os.path.dirname(p) for p in locals_}:
        os.makedirs(folder, exist_ok=True)
    fs.get([item.path for item in objects], locals_)
    for item, local in zip(objects, locals_, strict=True):
        got = os.path.getsize(local)
        if got != item.size:
            raise OSError(f"{item.path}: {got} bytes arrived of {item.size}")
    read_only(partial)  # jobs share the copy: one that writes to it by mistake is refused
    try:
        partial.rename(entry)
    except OSError:  # another staging on this machine finished the same copy first
        writable(partial)
        shutil.rmtree(partial, ignore_errors=True)
        if not entry.is_dir():
            raise
    return Staged(entry, target, False, objects)


def read_only(tree: Path) -> None:
    for path in (*tree.rglob("*"), tree):
        path.chmod(0o555 if path.is_dir() else 0o444)


def writable(tree: Path) -> None:
    for path in (tree, *tree.rglob("*")):
        if path.is_dir():
            path.chmod(0o755)


def evict(cache: Path, limit: int, keep: set[Path]) -> list[Path]:
    """Remove the copies used least recently until the cache holds at most ``limit`` bytes (``keep`` stays)."""
    entries = []
    for entry in cache.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():  # a copy being made, rclone's cache, the lock
            continue
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        entries.append((entry.stat().st_mtime, entry, size))
    total = sum(size for _, _, size in entries)
    removed = []
    for _, entry, size in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if entry in keep:
            continue
        writable(entry)
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry)
    return removed


def link(target: Path, at: Path) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        at.unlink()
    at.symlink_to(target)


def main() -> int:
    order = json.loads(os.environ[VARIABLE])
    cache = account_cache(Path(order["cache"]))
    used: set[Path] = set()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one staging at a time per account and machine: eviction is safe
        for left in cache.glob(f"{PARTIAL}*"):  # a staging killed halfway (none other runs now): never reused
            writable(left)
            shutil.rmtree(left, ignore_errors=True)
        for item in order["inputs"]:
            store = Store.from_json(item["store"])
            if item.get("mode") == "mount":  # rclone (FUSE); written back and unmounted when the job ends
                from corral.data import fuse

                try:
                    where = hashlib.sha256(item["link"].encode()).hexdigest()[:16]
                    fuse.mount(store, Path(item["link"]), cache / f".rclone-{where}", Path(item["record"]))
                except Exception as exc:
                    print(f"corral: mount {item['id']}: could not mount {item['source']}: {describe(exc)}",
                          file=sys.stderr)  # fmt: skip
                    return 1
                print(f"corral: mount {item['id']}: {item['source']} mounted (rclone, written back at the end)")
                continue
            if store.protocol == "file":  # a directory every node sees: the job reads it where it is
                link(Path(item["path"]), Path(item["link"]))
                print(f"corral: input {item['id']}: {item['source']} (a shared directory, not copied)")
                continue
            try:
                fs = store.open()  # imports s3fs or adlfs: not counted below (the prepare's own time shows it)
                started = time.monotonic()
                staged = stage_input(fs, store, item["path"], cache)
            except Exception as exc:
                print(f"corral: input {item['id']}: could not stage {item['source']}: {describe(exc)}", file=sys.stderr)
                return 1
            used.add(staged.entry)
            link(staged.target, Path(item["link"]))
            size = sum(o.size for o in staged.objects)
            took = time.monotonic() - started
            how = f"cached, {took:.2f} s" if staged.cached else f"copied in {took:.2f} s"
            files = f"{len(staged.objects)} file{'s' if len(staged.objects) != 1 else ''}"
            print(f"corral: input {item['id']}: {files}, {size} bytes from {item['source']} ({how})")
        for folder in order.get("dirs", []):  # outputs under a mount root, its mounts now there
            os.makedirs(folder, exist_ok=True)
        for gone in evict(cache, int(order["limit"]), used):
            print(f"corral: cache: removed {gone.name} (used least recently)")
    return 0


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
