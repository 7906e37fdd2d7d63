from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from corral.core.errors import InvalidRequest, InvalidSpec, NotFound, TooLarge
from corral.storage.code import ArchiveUpload, check_archive_file, pack_directory
from corral.storage.files import file_to_read, list_directory


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        (root / f"f{i}.txt").write_text(str(i))
    (root / "sub" / "deep.txt").write_text("deep")
    (tmp_path / "secret.txt").write_text("outside")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape_dir").symlink_to(tmp_path)
    return root


def test_listing_is_paginated_by_name(tree: Path) -> None:
    page = list_directory(tree, "", limit=3)
    # The two symlinks that lead out sort first and are skipped; the page is shorter, the cursor moves on.
    assert [e.name for e in page.entries] == ["f0.txt"]
    assert page.next_cursor == "f0.txt"
    names = []
    cursor = None
    while True:
        page = list_directory(tree, "", cursor=cursor, limit=2)
        names += [e.name for e in page.entries]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert names == ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "f4.txt", "sub"], "symlinks out are not listed"
    assert [e.path for e in list_directory(tree, "sub").entries] == ["sub/deep.txt"]


@pytest.mark.parametrize(
    "bad", ["../secret.txt", "/etc/passwd", "sub/../../secret.txt", "escape", "escape_dir/secret.txt"]
)
def test_paths_leaving_the_directory_are_refused(tree: Path, bad: str) -> None:
    with pytest.raises(InvalidRequest):
        file_to_read(tree, bad)


def test_missing_file(tree: Path) -> None:
    with pytest.raises(NotFound):
        file_to_read(tree, "nope.txt")
    assert file_to_read(tree, "sub/deep.txt").read_text() == "deep"


def _names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def test_pack_honours_corralignore_over_gitignore(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print(1)")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "big.bin").write_bytes(b"x" * 100)
    (tmp_path / "model.pt").write_text("w")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / ".gitignore").write_text("*.pt\n")
    data, _ = pack_directory(tmp_path)
    assert _names(data) == {"train.py", "data/big.bin", ".gitignore"}
    (tmp_path / ".corralignore").write_text("data/\n")
    data, sha = pack_directory(tmp_path)
    assert _names(data) == {"train.py", "model.pt", ".gitignore", ".corralignore"}
    _upload(tmp_path / "code", data, sha)
    assert (tmp_path / "code" / f"{sha}.tar.gz").read_bytes() == data


def _upload(code_dir: Path, data: bytes, sha: str, **limits: int) -> None:
    upload = ArchiveUpload(code_dir, sha, max_bytes=limits.pop("max_bytes", 10**6))
    try:
        for start in range(0, len(data), 1000):
            upload.write(data[start : start + 1000])
        upload.finish(
            max_unpacked_bytes=limits.get("max_unpacked_bytes", 10**6), max_members=limits.get("members", 100)
        )
    finally:
        upload.discard()
    assert not [p for p in code_dir.iterdir() if p.suffix == ".tmp"]


def test_pack_size_limit_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 2048)
    with pytest.raises(InvalidSpec, match=r"\.corralignore"):
        pack_directory(tmp_path, max_bytes=1024)


def test_archive_checks(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.sh")
        info.size = 0
        tar.addfile(info, io.BytesIO())
    import hashlib

    data = buffer.getvalue()
    with pytest.raises(InvalidRequest, match="not a safe"):
        _upload(tmp_path, data, hashlib.sha256(data).hexdigest())
    with pytest.raises(InvalidRequest, match="does not match"):
        _upload(tmp_path, data, "0" * 64)
    with pytest.raises(TooLarge, match="max_code_bytes"):
        _upload(tmp_path, data, hashlib.sha256(data).hexdigest(), max_bytes=len(data) - 1)
    assert not list(tmp_path.glob("*.tar.gz"))


def _bomb(path: Path, members: int, size: int) -> Path:
    """A gzipped tar of ``members`` files of ``size`` zero bytes each (tiny once compressed)."""
    with tarfile.open(path, mode="w:gz") as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return path


def test_archive_limits_on_unpacked_size_and_members(tmp_path: Path) -> None:
    big = _bomb(tmp_path / "big.tar.gz", 2, 4 * 1024 * 1024)
    assert big.stat().st_size < 64 * 1024
    with pytest.raises(TooLarge, match="max_code_unpacked_bytes"):
        check_archive_file(big, max_unpacked_bytes=6 * 1024 * 1024, max_members=10)
    check_archive_file(big, max_unpacked_bytes=8 * 1024 * 1024, max_members=10)
    many = _bomb(tmp_path / "many.tar.gz", 11, 0)
    with pytest.raises(TooLarge, match="max_code_members"):
        check_archive_file(many, max_unpacked_bytes=10**6, max_members=10)
    check_archive_file(many, max_unpacked_bytes=10**6, max_members=11)


def test_archives_are_deterministic(tmp_path: Path) -> None:
    """The same tree packs to the same bytes (times, owners, gzip header fixed): uploaded and stored once."""
    (tmp_path / "train.py").write_text("print(1)")
    (tmp_path / "run.sh").write_text("#!/bin/sh")
    (tmp_path / "run.sh").chmod(0o755)
    _, first = pack_directory(tmp_path)
    os.utime(tmp_path / "train.py", (1, 1))
    time.sleep(1.1)  # a later second in gzip's header, had it one
    data, second = pack_directory(tmp_path)
    assert first == second
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        modes = {m.name: (m.mode, m.mtime, m.uid) for m in tar.getmembers()}
    assert modes == {"run.sh": (0o755, 0, 0), "train.py": (0o644, 0, 0)}


def test_every_gitignore_counts_as_git_reads_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    code = repo / "project" / "code"
    (repo / ".git").mkdir(parents=True)
    (code / "data").mkdir(parents=True)
    (code / "lib").mkdir()
    (repo / ".gitignore").write_text("*.bin\nproject/code/secret.txt\n")
    (code / "lib" / ".gitignore").write_text("cache/\n")
    (code / "lib" / "cache").mkdir()
    for rel in ("train.py", "data/big.bin", "secret.txt", "lib/util.py", "lib/cache/x.py", "data/keep.csv"):
        (code / rel).write_text("x")
    data, _ = pack_directory(code)
    assert _names(data) == {"train.py", "lib/.gitignore", "lib/util.py", "data/keep.csv"}
    (code / ".corralignore").write_text("data/\n")  # its own rules replace git's
    data, _ = pack_directory(code)
    assert _names(data) == {
        ".corralignore",
        "train.py",
        "secret.txt",
        "lib/.gitignore",
        "lib/util.py",
        "lib/cache/x.py",
    }


def test_too_much_code_names_the_largest_files(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"x" * 3000)
    (tmp_path / "small.py").write_bytes(b"x" * 10)
    with pytest.raises(InvalidSpec, match=r"the largest: model\.pt .*small\.py"):
        pack_directory(tmp_path, max_bytes=1024)


def test_staging_copies_once_keeps_copies_whole_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    """corral.data.stage on a local file system (an fsspec one, as S3's is): a copy is keyed by what the input is,
    made read-only, reused; a half-made copy is never taken for one; the oldest copies go past the limit."""
    from corral.data.stage import PARTIAL, evict, stage_input
    from corral.data.stores import Store

    source = tmp_path / "store" / "set"
    source.mkdir(parents=True)
    (source / "a.bin").write_bytes(b"a" * 1000)
    store = Store("file", {}, str(tmp_path / "store"))
    fs = store.open()
    cache = tmp_path / "cache"
    cache.mkdir()
    first = stage_input(fs, store, str(source), cache)
    assert not first.cached and (first.entry / "a.bin").read_bytes() == b"a" * 1000
    assert (first.entry / "a.bin").stat().st_mode & 0o222 == 0  # shared: read-only
    assert stage_input(fs, store, str(source), cache).cached
    (cache / f"{PARTIAL}deadbeef-1").mkdir()  # a staging killed halfway: not a copy
    time.sleep(0.01)
    (source / "a.bin").write_bytes(b"b" * 1000)  # changed: a new copy
    second = stage_input(fs, store, str(source), cache)
    assert not second.cached and second.entry != first.entry
    os.utime(first.entry, (1, 1))  # the least recently used
    assert evict(cache, 1500, {second.entry}) == [first.entry]
    assert not first.entry.exists() and second.entry.exists() and (cache / f"{PARTIAL}deadbeef-1").exists()
