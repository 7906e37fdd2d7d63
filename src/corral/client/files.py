"""A job's output files: listed page by page, downloaded streamed to disk."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from corral.client.http import ClientBase, raise_for_error
from corral.core.errors import ServerUnavailable
from corral.core.models import FileEntry, FilePage

#: Told ``(bytes done, bytes in all)`` as a transfer goes on.
Progress = Callable[[int, int], None]


class FilesMixin(ClientBase):
    def list_files(
        self,
        name: str,
        *,
        output: str | None = None,
        path: str = "",
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[FileEntry]:
        """Every entry of a job's output directory (all pages); without ``output``, the output ids."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"path": path}
            if output is not None:
                params["output"] = output
            if cursor is not None:
                params["cursor"] = cursor
            page = FilePage.model_validate(
                self._request("GET", self._job(name, experiment, workspace) + "/files", params=params).json()
            )
            yield from page.entries
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def download_file(
        self,
        name: str,
        *,
        output: str,
        path: str,
        destination: str | Path,
        progress: Progress | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Path:
        """Save one file of a job's output, streamed to disk; ``destination`` may be a directory (its folders
        are created). ``progress(done, total)`` is called as bytes arrive (total 0 when the server does not say)."""
        dest = Path(destination)
        if dest.is_dir():
            dest = dest / Path(path).name
        url = self._job(name, experiment, workspace) + "/files/content"
        return self._save(url, {"output": output, "path": path}, dest, progress)

    def _save(self, url: str, params: dict[str, str], dest: Path, progress: Progress | None = None) -> Path:
        """Stream a file the server sends to ``dest`` (its folders made), whole or not at all: it is written
        beside it first and renamed into place once complete."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream("GET", url, params=params) as response:
                raise_for_error(response)
                total = int(response.headers.get("content-length") or 0)
                with partial.open("wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                        if progress is not None:
                            progress(f.tell(), total)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return dest

    def download(
        self,
        name: str,
        *,
        output: str,
        destination: str | Path,
        path: str = "",
        progress: Progress | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> list[Path]:
        """Save a file, a directory or (``path=""``) a whole output of a job. A directory's files keep their
        folders under ``destination``, which is created; a file goes where :meth:`download_file` puts it.
        ``progress(done, total)`` counts the bytes of all the files."""
        where = {"experiment": experiment, "workspace": workspace}
        entries = list(self.list_files(name, output=output, path=path, **where))
        if len(entries) == 1 and not entries[0].is_dir and entries[0].path == path.strip("/"):
            return [self.download_file(name, output=output, path=path, destination=destination, progress=progress,
                                       **where)]  # fmt: skip
        root = Path(destination)
        root.mkdir(parents=True, exist_ok=True)
        files = list(self._files_under(name, output, entries, **where))
        total = sum(entry.size for entry in files)
        done = 0
        base = path.strip("/")
        saved = []
        for entry in files:
            relative = entry.path[len(base) :].lstrip("/") if base else entry.path
            step = None if progress is None else (lambda n, _t, before=done: progress(before + n, total))
            saved.append(self.download_file(name, output=output, path=entry.path, destination=root / relative,
                                            progress=step, **where))  # fmt: skip
            done += saved[-1].stat().st_size
        if progress is not None:
            progress(done, max(total, done))
        return saved

    def _files_under(
        self, name: str, output: str, entries: list[FileEntry], **where: str | None
    ) -> Iterator[FileEntry]:
        """The files of ``entries``, and of every directory among them, depth first."""
        for entry in entries:
            if entry.is_dir:
                inner = list(self.list_files(name, output=output, path=entry.path, **where))
                yield from self._files_under(name, output, inner, **where)
            else:
                yield entry
