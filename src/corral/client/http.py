"""The client's connection to the server: requests with their errors and retries, and finding a job by name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Self

import httpx

from corral.client import config
from corral.core.errors import InvalidRequest, NotFound, ServerUnavailable, error_from_payload


class ClientBase:
    """The connection, and what every group of operations shares: requests, errors, finding a job."""

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        workspace: str | None = None,
        experiment: str | None = None,
        profile: str | None = None,
        timeout: float = 30.0,
        retries_when_limited: int = 3,
    ) -> None:
        """``retries_when_limited``: how many times a request refused by a per-user limit (429) is sent again,
        each after the server's ``Retry-After`` (at most :data:`MAX_RETRY_AFTER` seconds); 0 raises at once.
        What is not given comes from the environment, then from the config file's profile (``profile``, else its
        current one): see :mod:`corral.client.config`."""
        self.server = (server or config.server_url(profile)).rstrip("/")
        self.retries_when_limited = retries_when_limited
        self.workspace = workspace or config.workspace(profile)
        #: The experiment of new jobs and lists (else a spec's, else ``CORRAL_EXPERIMENT``, else the profile's,
        #: else ``default``). Unset, a job named alone is looked for in every experiment of the workspace.
        self.experiment = experiment or config.experiment(profile)
        self._located: dict[tuple[str, str], str] = {}
        token = token or config.token(self.server, profile)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"{self.server}/api/v1", headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for retry in range(self.retries_when_limited + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ServerUnavailable(f"cannot reach the Corral server at {self.server}: {exc}") from None
            if response.status_code != 429 or retry == self.retries_when_limited:
                break
            time.sleep(retry_after(response))
        if response.status_code >= 400:
            raise error_from_payload(json_or_none(response), f"HTTP {response.status_code}: {response.text[:200]}")
        return response

    def _stream(self, path: str, params: dict[str, Any]) -> Iterator[bytes]:
        """A GET's body in chunks as they arrive (a body of any size, in little memory; no read timeout)."""
        try:
            with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as response:
                raise_for_error(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None

    def _ws(self, workspace: str | None) -> str:
        return f"/workspaces/{workspace or self.workspace}"

    def _job(self, name: str, experiment: str | None, workspace: str | None) -> str:
        exp = experiment or self.experiment or self.locate_job(name, workspace=workspace)
        return f"{self._ws(workspace)}/experiments/{exp}/jobs/{name}"

    def locate_job(self, name: str, *, workspace: str | None = None) -> str:
        """The experiment of the workspace's job ``name``: NotFound when none has one of that name, an error
        naming them when several do (then give ``experiment=``)."""
        ws = workspace or self.workspace
        if (ws, name) in self._located:
            return self._located[(ws, name)]
        found = self._request("GET", f"{self._ws(ws)}/jobs", params={"name": name, "limit": 100}).json()
        experiments = sorted({job["experiment"] for job in found})
        if not experiments:
            raise NotFound(f"job {name!r} not found in any experiment of workspace {ws!r}")
        if len(experiments) > 1:
            raise InvalidRequest(
                f"job {name!r} is in experiments {', '.join(experiments)} of workspace {ws!r}: say which (-e)"
            )
        self._located[(ws, name)] = experiments[0]
        return experiments[0]


def raise_for_error(response: httpx.Response, fallback: str | None = None) -> None:
    """Raise the error a streamed response carries (its body read first), as :meth:`Client._request` does."""
    if response.status_code >= 400:
        response.read()
        raise error_from_payload(json_or_none(response), fallback or f"HTTP {response.status_code}")


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


#: The longest a client waits on a 429 before it sends the request again.
MAX_RETRY_AFTER = 30.0


def retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.1, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0
