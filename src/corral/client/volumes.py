"""A workspace's volumes: made from a spec, listed, and their files listed, uploaded and downloaded (through the
server, which holds the volumes' credentials: a client never sees them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from corral.client.files import FilesMixin
from corral.client.http import raise_for_error
from corral.core.errors import InvalidRequest, ServerUnavailable
from corral.core.models import FileEntry, FilePage, Volume
from corral.core.spec_parsing import load_spec_file


class VolumesMixin(FilesMixin):
    def create_volume(self, spec: str | Path | dict[str, Any], *, workspace: str | None = None) -> Volume:
        """A new volume from a spec (a mapping, or a YAML/JSON file); the server reaches its store first."""
        data = dict(spec) if isinstance(spec, dict) else load_spec_file(spec)
        return Volume.model_validate(self._request("POST", f"{self._ws(workspace)}/volumes", json=data).json())

    def list_volumes(self, *, workspace: str | None = None) -> list[Volume]:
        return [Volume.model_validate(v) for v in self._request("GET", f"{self._ws(workspace)}/volumes").json()]

    def get_volume(self, name: str, *, workspace: str | None = None) -> Volume:
        return Volume.model_validate(self._request("GET", f"{self._ws(workspace)}/volumes/{name}").json())

    def delete_volume(self, name: str, *, workspace: str | None = None) -> None:
        self._request("DELETE", f"{self._ws(workspace)}/volumes/{name}")

    def list_volume_files(self, name: str, path: str = "", *, workspace: str | None = None) -> Iterator[FileEntry]:
        """The files and folders at ``path`` in the volume (one level; every page)."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"path": path}
            if cursor is not None:
                params["cursor"] = cursor
            response = self._request("GET", f"{self._ws(workspace)}/volumes/{name}/files", params=params)
            page = FilePage.model_validate(response.json())
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def upload_to_volume(
        self, name: str, source: str | Path, path: str = "", *, workspace: str | None = None
    ) -> list[str]:
        """Copy a local file, or a directory with all its files, to ``path`` in the volume (a directory's files
        keep their folders under it; a file goes to ``path`` itself, or under it where ``path`` ends with ``/``
        or is empty). Returns the paths written in the volume."""
        source = Path(source)
        if not source.exists():
            raise InvalidRequest(f"{source}: no such file or directory")
        if source.is_file():
            target = f"{path}{source.name}" if not path or path.endswith("/") else path
            self._upload_file(name, source, target, workspace)
            return [target]
        written = []
        base = path.strip("/")
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = file.relative_to(source).as_posix()
            target = f"{base}/{relative}" if base else relative
            self._upload_file(name, file, target, workspace)
            written.append(target)
        return written

    def _upload_file(self, name: str, source: Path, target: str, workspace: str | None) -> None:
        url = f"{self._ws(workspace)}/volumes/{name}/files/content"
        try:
            with source.open("rb") as body:
                response = self._http.put(url, params={"path": target}, content=_read(body))
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None
        raise_for_error(response)

    def download_from_volume(
        self, name: str, path: str, destination: str | Path, *, workspace: str | None = None
    ) -> list[Path]:
        """Save a file, or a folder with everything under it, from the volume. A folder's files keep their folders
        under ``destination`` (created); a file goes to ``destination``, or into it where it is a directory."""
        entries = list(self.list_volume_files(name, path, workspace=workspace))
        stripped = path.strip("/")
        if len(entries) == 1 and not entries[0].is_dir and entries[0].path == stripped:
            dest = Path(destination)
            if dest.is_dir():
                dest = dest / entries[0].name
            return [self._download_file(name, stripped, dest, workspace)]
        saved = []
        for entry in self._volume_files_under(name, entries, workspace):
            relative = entry.path[len(stripped) :].lstrip("/") if stripped else entry.path
            saved.append(self._download_file(name, entry.path, Path(destination) / relative, workspace))
        return saved

    def _volume_files_under(self, name: str, entries: list[FileEntry], workspace: str | None) -> Iterator[FileEntry]:
        for entry in entries:
            if entry.is_dir:
                inner = list(self.list_volume_files(name, entry.path, workspace=workspace))
                yield from self._volume_files_under(name, inner, workspace)
            else:
                yield entry

    def _download_file(self, name: str, path: str, dest: Path, workspace: str | None) -> Path:
        return self._save(f"{self._ws(workspace)}/volumes/{name}/files/content", {"path": path}, dest)


def _read(body: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while block := body.read(size):
        yield block
