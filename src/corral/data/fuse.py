"""``mounts: [{mode: mount}]``: an S3 volume mounted with rclone (FUSE) on the node, its writes kept in rclone's
cache and written back to the store — all of them, before the job can end.

rclone exits at once when its mount is unmounted, forgetting writes not yet uploaded (measured: a file written
just before ``fusermount -u`` never reached the store). So the mount is written back first: the finishing step
asks rclone (its remote control, on the node's loopback) until no upload is in progress or queued, and only
then unmounts. ``--vfs-write-back 0s`` starts each upload as soon as its file is closed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from corral.data.stores import Store

#: rclone's name for the volume's remote (its settings come in RCLONE_CONFIG_CORRAL_* variables).
REMOTE = "CORRAL"
MOUNT_SECONDS = 30.0
#: How long write-back may take before the finishing step gives up (the attempt then fails: never a false
#: success).
WRITE_BACK_SECONDS = 600.0


def rclone_environment(store: Store) -> dict[str, str]:
    if store.protocol != "s3":
        raise ValueError(f"mode: mount is available for s3 volumes in this version, not {store.protocol}")
    options = store.options
    env = {"TYPE": "s3", "PROVIDER": "Other"}
    if options.get("anon"):
        env["ENV_AUTH"] = "false"
    else:
        env["ACCESS_KEY_ID"] = options["key"]
        env["SECRET_ACCESS_KEY"] = options["secret"]
        if options.get("token"):
            env["SESSION_TOKEN"] = options["token"]
    if options.get("endpoint_url"):
        env["ENDPOINT"] = options["endpoint_url"]
    region = (options.get("client_kwargs") or {}).get("region_name")
    if region:
        env["REGION"] = region
    return {f"RCLONE_CONFIG_{REMOTE}_{k}": v for k, v in env.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mount(store: Store, mountpoint: Path, cache: Path, record: Path) -> None:
    """Mount the store's root at ``mountpoint`` (rclone in a session of its own: it outlives the staging step),
    and note how to reach it in ``record``."""
    if shutil.which("rclone") is None or (shutil.which("fusermount3") or shutil.which("fusermount")) is None:
        raise OSError("mode: mount needs rclone and fuse3 on the node (apt-get install rclone fuse3)")
    mountpoint.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        "rclone", "mount", f"{REMOTE}:{store.root}", str(mountpoint), "--vfs-cache-mode", "writes",
        "--vfs-write-back", "0s", "--cache-dir", str(cache), "--dir-cache-time", "5s",
        "--rc", "--rc-addr", f"127.0.0.1:{port}", "--rc-no-auth",
    ]  # fmt: skip
    log_path = record.with_suffix(".log")
    record.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **rclone_environment(store)}
    env.pop("AWS_CA_BUNDLE", None)  # rclone fails on a bundle it cannot read; the store's endpoint is the user's
    with log_path.open("ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + MOUNT_SECONDS
    while not os.path.ismount(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"rclone could not mount {store.root}: {tail[0][:300]}")
        time.sleep(0.05)
    record.write_text(json.dumps({"pid": process.pid, "port": port, "mountpoint": str(mountpoint)}))


def stats(port: int) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/vfs/stats", data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read())["diskCache"])


def write_back_and_unmount(record: Path) -> int:
    """Wait until rclone has uploaded every write, then unmount; the files it wrote back. ``OSError`` if a write
    failed or took too long (the mount is left for the attempt's end to clear)."""
    noted = json.loads(record.read_text())
    port, mountpoint = int(noted["port"]), noted["mountpoint"]
    deadline = time.monotonic() + WRITE_BACK_SECONDS
    quiet = 0
    while quiet < 2:  # twice in a row: a file closed just now is queued by then
        cache = stats(port)
        if cache.get("erroredFiles"):
            raise OSError(f"rclone could not write {cache['erroredFiles']} files back to the store")
        quiet = quiet + 1 if not cache.get("uploadsInProgress") and not cache.get("uploadsQueued") else 0
        if time.monotonic() > deadline:
            raise OSError(f"rclone had not written everything back after {WRITE_BACK_SECONDS:.0f} s")
        time.sleep(0.1)
    files = int(cache.get("files") or 0)
    unmount = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    subprocess.run([unmount, "-u", mountpoint], check=True, capture_output=True)
    end = time.monotonic() + 30
    while _alive(int(noted["pid"])) and time.monotonic() < end:
        time.sleep(0.05)
    return files


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has ended (its parent, init, reaps it)
