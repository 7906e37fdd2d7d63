"""Code upload: a working directory packed by the client, unpacked on every node.

Ignore rules: ``.corralignore`` if the directory has one, else ``.gitignore``
(git's own syntax, through pathspec); ``.git/`` is never packed. An archive is
named by the SHA-256 of its bytes, so the same code is stored once.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from corral.core.errors import InvalidRequest, InvalidSpec

DEFAULT_MAX_CODE_BYTES = 100 * 1024 * 1024


def _ignore_spec(root: Path) -> object | None:
    import pathspec

    for name in (".corralignore", ".gitignore"):
        rules = root / name
        if rules.is_file():
            return pathspec.GitIgnoreSpec.from_lines(rules.read_text().splitlines())
    return None


def pack_directory(root: str | Path, *, max_bytes: int = DEFAULT_MAX_CODE_BYTES) -> tuple[bytes, str]:
    """A gzipped tar of ``root`` honouring its ignore rules, and its SHA-256."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidSpec(f"code: {root} is not a directory")
    spec = _ignore_spec(root)
    buffer = io.BytesIO()
    total = 0
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root)
            dirnames[:] = sorted(
                d for d in dirnames if d != ".git" and not _ignored(spec, (rel_dir / d).as_posix() + "/")
            )
            for name in sorted(filenames):
                rel = (rel_dir / name).as_posix()
                if _ignored(spec, rel):
                    continue
                full = Path(dirpath) / name
                if full.is_symlink() or not full.is_file():
                    continue
                total += full.stat().st_size
                if total > max_bytes:
                    raise InvalidSpec(
                        f"code: {root} holds more than {max_bytes // (1024 * 1024)} MiB to upload; "
                        "list large files (data, checkpoints) in .corralignore"
                    )
                tar.add(full, arcname=rel, recursive=False)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _ignored(spec: object | None, rel: str) -> bool:
    return spec is not None and bool(spec.match_file(rel))  # type: ignore[attr-defined]


def check_archive(data: bytes, sha256: str, *, max_bytes: int) -> None:
    """Refuse an upload that is not what it claims or could escape its directory."""
    if len(data) > max_bytes:
        raise InvalidRequest(f"code archive: {len(data)} bytes, more than the {max_bytes}-byte limit")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidRequest("code archive: its SHA-256 does not match the name it was sent under")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                tarfile.data_filter(member, "/nonexistent-dest")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidRequest(f"code archive: not a safe gzipped tar: {exc}") from None
