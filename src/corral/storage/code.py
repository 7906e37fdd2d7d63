"""Code upload: a working directory packed by the client, unpacked on every node.

Ignore rules: ``.corralignore`` if the directory has one, else every ``.gitignore``
as git reads them (:class:`IgnoreRules`; git's own syntax, through pathspec);
``.git/`` is never packed. An archive is deterministic and named by the SHA-256 of
its bytes, so the same code is uploaded and stored once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path
from typing import Any

from corral.core.errors import InvalidRequest, InvalidSpec, TooLarge

DEFAULT_MAX_CODE_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_CODE_UNPACKED_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_CODE_MEMBERS = 100_000


class IgnoreRules:
    """What to leave out of a code directory, as git would.

    ``.corralignore`` in the directory, when it has one, is the only rule file. Otherwise every
    ``.gitignore`` counts as git reads them: those of the directory's parents up to the repository's root
    (the folder with ``.git``) and those found inside it, each for the paths below its own folder.
    """

    def __init__(self, root: Path) -> None:
        #: (how a path relative to the root reads from the rule file's folder: a prefix to add, or one to
        #: strip; the rules)
        self._add: list[tuple[str, Any]] = []
        self._strip: list[tuple[str, Any]] = []
        corralignore = root / ".corralignore"
        self.own_file = corralignore.is_file()
        if self.own_file:
            self._add.append(("", _rules(corralignore)))
            return
        for parent, below in _parents_in_repository(root):
            if (parent / ".gitignore").is_file():
                self._add.append((below, _rules(parent / ".gitignore")))

    def enter(self, rel_dir: str, folder: Path) -> None:
        """A folder of the walk (``rel_dir`` from the root): its ``.gitignore`` applies below it."""
        if not self.own_file and rel_dir and (folder / ".gitignore").is_file():
            self._strip.append((rel_dir + "/", _rules(folder / ".gitignore")))

    def ignored(self, rel: str, *, is_dir: bool = False) -> bool:
        end = "/" if is_dir else ""
        for prefix, spec in self._add:
            if spec.match_file(_join(prefix, rel) + end):
                return True
        return any(rel.startswith(prefix) and spec.match_file(rel[len(prefix) :] + end) for prefix, spec in self._strip)


def _rules(path: Path) -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(path.read_text(errors="replace").splitlines())


def _parents_in_repository(root: Path) -> list[tuple[Path, str]]:
    """``root`` and its parents up to the repository's root, each with the path of ``root`` below it
    (``""`` for ``root`` itself); only ``root`` when it is in no repository."""
    found: list[tuple[Path, str]] = []
    here = root.resolve()
    below = ""
    for folder in [here, *here.parents]:
        found.append((folder, below))
        if (folder / ".git").exists():
            return found
        below = f"{folder.name}/{below}".rstrip("/") if below else folder.name
    return found[:1]


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """The same bytes for the same tree, whoever packs it and whenever: no owner, no time, plain modes."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def pack_directory(root: str | Path, *, max_bytes: int = DEFAULT_MAX_CODE_BYTES) -> tuple[bytes, str]:
    """A gzipped tar of ``root`` honouring its ignore rules, and its SHA-256.

    Deterministic: entries sorted, times, owners and the gzip header fixed, so the same tree gives the same
    archive (and the server stores it once).
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidSpec(f"code: {root} is not a directory")
    rules = IgnoreRules(root)
    files: list[tuple[str, Path, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        rel_dir = folder.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        rules.enter(rel_dir, folder)
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and not rules.ignored(_join(rel_dir, d), is_dir=True))
        for name in sorted(filenames):
            rel = _join(rel_dir, name)
            full = folder / name
            if rules.ignored(rel) or full.is_symlink() or not full.is_file():
                continue
            files.append((rel, full, full.stat().st_size))
    total = sum(size for _, _, size in files)
    if total > max_bytes:
        largest = sorted(files, key=lambda f: -f[2])[:5]
        names = ", ".join(f"{rel} ({size / 2**20:.1f} MiB)" for rel, _, size in largest)
        raise InvalidSpec(
            f"code: {root} holds {total / 2**20:.1f} MiB to upload, more than {max_bytes // 2**20} MiB; the largest: "
            f"{names}; list large files (data, checkpoints) in .corralignore or .gitignore"
        )
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=6, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel, full, _ in sorted(files):
            tar.add(full, arcname=rel, recursive=False, filter=_normalized)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


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
