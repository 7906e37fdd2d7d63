"""Upload a node's outputs to their volumes: ``python -m corral.data.upload``, once every process of the job has
exited 0 and before the job counts as succeeded.

What to upload comes in ``CORRAL_UPLOAD_OUTPUTS`` (JSON: per output its node-local folder, its store and the path
there). Every file is uploaded, then checked against the store: its size, and its MD5 where the store keeps one
(an S3 object uploaded whole, an Azure blob); a file that does not match fails the upload. Each file uploaded is
one JSON line on stdout — the manifest (output, path, size, SHA-256) — and what happens is told on stderr (the
node's upload log). Any failure exits 1: the attempt fails with ``OutputUploadFailed``, and is retried.

Uploading again what was uploaded is harmless (same bytes, same names), so an upload cut short by a restart of
the server is simply done again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from corral.data.stage import describe
from corral.data.stores import Store

VARIABLE = "CORRAL_UPLOAD_OUTPUTS"


def digests(path: Path) -> tuple[str, str]:
    """SHA-256 and MD5 of a file, in hex."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def stored_md5(info: dict[str, Any]) -> str | None:
    """The MD5 the store keeps of an object, where it keeps one: an S3 ETag of a whole upload (a multipart one has
    a ``-``), an Azure blob's content MD5."""
    etag = str(info.get("ETag") or "").strip('"')
    if etag and "-" not in etag and len(etag) == 32:
        return etag.lower()
    settings = info.get("content_settings") or {}
    md5 = settings.get("content_md5") if isinstance(settings, dict) else None
    if md5:
        return bytes(md5).hex()
    return None


def upload_output(fs: Any, local: Path, remote: str) -> list[dict[str, Any]]:
    """Upload every file under ``local`` to ``remote``; the manifest's entries."""
    files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
    if not files:
        return []
    targets = [f"{remote}/{p.relative_to(local).as_posix()}" for p in files]
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols:  # a directory (a path volume): its folders are made (an object store has none)
        for folder in sorted({t.rsplit("/", 1)[0] for t in targets}):
            fs.makedirs(folder, exist_ok=True)
    fs.put([str(p) for p in files], targets)
    entries = []
    for path, target in zip(files, targets, strict=True):
        sha, md5 = digests(path)
        size = path.stat().st_size
        info = fs.info(target)
        if int(info.get("size") or 0) != size:
            raise OSError(f"{target}: the store has {info.get('size')} bytes, the node wrote {size}")
        kept = stored_md5(info)
        if kept is not None and kept != md5:
            raise OSError(f"{target}: the store's MD5 {kept} is not that of the file the node wrote ({md5})")
        entries.append({"path": path.relative_to(local).as_posix(), "size": size, "sha256": sha})
    return entries


def main() -> int:
    order = json.loads(os.environ[VARIABLE])
    node = os.environ.get("CORRAL_NODE_NAME", "")
    for record in order.get("unmount", []):  # the mounts first: what the job wrote there reaches the store
        from corral.data import fuse

        try:
            files = fuse.write_back_and_unmount(Path(record))
        except Exception as exc:
            print(f"corral: mount: writing back failed ({record}): {describe(exc)}", file=sys.stderr)
            return 1
        print(f"corral: mount: written back ({files} files in rclone's cache) and unmounted", file=sys.stderr)
    for item in order["outputs"]:
        store = Store.from_json(item["store"])
        started = time.monotonic()
        try:
            entries = upload_output(store.open(), Path(item["local"]), item["path"])
        except Exception as exc:
            print(f"corral: output {item['id']}: upload to {item['source']} failed: {describe(exc)}", file=sys.stderr)
            return 1
        for entry in entries:
            print(json.dumps({"output": item["id"], "node": node, **entry}), flush=True)
        size = sum(e["size"] for e in entries)
        took = time.monotonic() - started
        print(f"corral: output {item['id']}: {len(entries)} files, {size} bytes to {item['source']} in {took:.2f} s",
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
