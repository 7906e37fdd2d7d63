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
import zlib
from pathlib import Path

from corral.core.errors import InvalidRequest, InvalidSpec, TooLarge

DEFAULT_MAX_CODE_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_CODE_UNPACKED_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_CODE_MEMBERS = 100_000


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


class ArchiveUpload:
    """An upload received in pieces: written to a temporary file and hashed as it comes, refused as soon as it
    passes ``max_bytes`` (never held in memory whole). :meth:`finish` checks it and moves it in place."""

    def __init__(self, code_dir: Path, sha256: str, *, max_bytes: int) -> None:
        code_dir.mkdir(parents=True, exist_ok=True)
        self.final = code_dir / f"{sha256}.tar.gz"
        self.sha256 = sha256
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._tmp = code_dir / f".{sha256}.{os.getpid()}.{id(self)}.tmp"
        self._file = self._tmp.open("wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"code archive: more than the {self.max_bytes}-byte limit (server setting max_code_bytes)")
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self, *, max_unpacked_bytes: int, max_members: int) -> None:
        self._file.close()
        if self._hash.hexdigest() != self.sha256:
            raise InvalidRequest("code archive: its SHA-256 does not match the name it was sent under")
        check_archive_file(self._tmp, max_unpacked_bytes=max_unpacked_bytes, max_members=max_members)
        os.replace(self._tmp, self.final)

    def discard(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def check_archive_file(path: Path, *, max_unpacked_bytes: int, max_members: int) -> None:
    """Refuse an archive that could escape its directory, or that unpacks to more than the limits.

    Read as a stream: each member's size is in its header, so a gzip bomb is refused at the first header that
    passes the limit, after decompressing at most ``max_unpacked_bytes``.
    """
    total = 0
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for count, member in enumerate(tar, 1):
                if count > max_members:
                    raise TooLarge(
                        f"code archive: more than {max_members} files and directories (server setting max_code_members)"
                    )
                tarfile.data_filter(member, "/nonexistent-dest")
                total += member.size
                if total > max_unpacked_bytes:
                    raise TooLarge(
                        f"code archive: unpacks to more than {max_unpacked_bytes} bytes "
                        "(server setting max_code_unpacked_bytes)"
                    )
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise InvalidRequest(f"code archive: not a safe gzipped tar: {exc}") from None
