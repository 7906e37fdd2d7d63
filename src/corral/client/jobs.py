"""``RemoteJob``: a job as the SDK returns it, with what can be done to it.

job = client.create_job("job.yaml")
for event in job.follow():      # every rank's lines and the job's states, until its end
    ...
job = job.wait()                # the job as it ended
print(job.state, job.logs(rank=1, tail=20))
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from corral.core.errors import CorralError
from corral.core.models import FileEntry, FollowEvent, Job, JobEvent

if TYPE_CHECKING:
    from corral.client.client import Client
    from corral.client.files import Progress


class RemoteJob(Job):
    """The server's record of a job (every field of :class:`~corral.core.models.Job`, as of when it was read) and
    the client that read it. Methods that change or re-read the job return a new ``RemoteJob``."""

    _client: Client | None = PrivateAttr(default=None)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise CorralError("this job is not bound to a client: get it from a Client (get_job, list_jobs, ...)")
        return self._client

    def _where(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "workspace": self.workspace}

    def refresh(self) -> RemoteJob:
        """The job as it is now."""
        return self.client.get_job(self.name, **self._where())

    def wait(self, timeout: float | None = None) -> RemoteJob:
        """Block until the job ends (or ``timeout`` seconds pass); the job then."""
        return self.client.wait_job(self.name, timeout=timeout, **self._where())

    def logs(
        self, *, rank: int = 0, stream: str = "stdout", attempt: int | None = None, tail: int | None = None
    ) -> str:
        """A rank's log as it is now (of the latest attempt, or of ``attempt``)."""
        return self.client.job_logs(self.name, rank=rank, stream=stream, attempt=attempt, tail=tail, **self._where())

    def follow(self, *, ranks: str = "all", streams: str = "stdout,stderr") -> Iterator[FollowEvent]:
        """The job's states and its ranks' lines as they come, until it ends (see :meth:`Client.follow_job`)."""
        return self.client.follow_job(self.name, ranks=ranks, streams=streams, **self._where())

    def events(self) -> list[JobEvent]:
        return self.client.job_events(self.name, **self._where())

    def files(self, *, output: str | None = None, path: str = "") -> Iterator[FileEntry]:
        return self.client.list_files(self.name, output=output, path=path, **self._where())

    def download(
        self, output: str, destination: str | Path, *, path: str = "", progress: Progress | None = None
    ) -> list[Path]:
        return self.client.download(
            self.name, output=output, destination=destination, path=path, progress=progress, **self._where()
        )

    def terminate(self) -> RemoteJob:
        return self.client.terminate_job(self.name, **self._where())

    def delete(self) -> None:
        self.client.delete_job(self.name, **self._where())
