"""Code archives uploaded by clients, stored once per SHA-256 under ``<home>/code``."""

from __future__ import annotations

import os
from pathlib import Path

from corral.storage.code import check_archive


def has_archive(code_dir: Path, sha256: str) -> bool:
    return (code_dir / f"{sha256}.tar.gz").exists()


def store_archive(code_dir: Path, sha256: str, data: bytes, *, max_bytes: int) -> None:
    check_archive(data, sha256, max_bytes=max_bytes)
    code_dir.mkdir(parents=True, exist_ok=True)
    final = code_dir / f"{sha256}.tar.gz"
    tmp = code_dir / f".{sha256}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, final)
