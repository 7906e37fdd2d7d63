"""``corral.Client``: every operation of the REST API, in Python.

    from corral import Client
    client = Client()                       # CORRAL_SERVER, CORRAL_TOKEN / $CORRAL_HOME/token
    client.create_cluster("cluster.yaml")
    job = client.create_job("job.yaml")     # packs and uploads `code:` if the spec has it
    job = client.wait_job(job.name)
    print(client.job_logs(job.name))

Errors raise the same :mod:`corral.core.errors` classes the server raises.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel

from corral.client import config
from corral.core.errors import CorralError, InvalidRequest, NotFound, ServerUnavailable, error_from_payload
from corral.core.models import (
    Cluster,
    Experiment,
    FileEntry,
    FilePage,
    FollowEvent,
    Job,
    JobEvent,
    Node,
    Quota,
    Usage,
    User,
    UserCreated,
    Workspace,
)
from corral.core.spec_parsing import load_spec_file
from corral.storage.code import DEFAULT_MAX_CODE_BYTES, pack_directory

SpecInput = str | Path | dict[str, Any] | BaseModel


def _load(spec: SpecInput) -> tuple[dict[str, Any], Path]:
    """The spec as a mapping, and the directory its relative paths are relative to."""
    if isinstance(spec, BaseModel):  # a JobSpec or ClusterSpec built in Python
        return spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True), Path.cwd()
    if isinstance(spec, dict):
        return dict(spec), Path.cwd()
    path = Path(spec)
    return load_spec_file(path), path.resolve().parent


class Client:
    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        *,
        workspace: str = "default",
        experiment: str | None = None,
        timeout: float = 30.0,
        retries_when_limited: int = 3,
    ) -> None:
        """``retries_when_limited``: how many times a request refused by a per-user limit (429) is sent again,
        each after the server's ``Retry-After`` (at most :data:`MAX_RETRY_AFTER` seconds); 0 raises at once."""
        self.server = (server or config.server_url()).rstrip("/")
        self.retries_when_limited = retries_when_limited
        self.workspace = workspace
        #: The experiment of new jobs and lists (else a spec's, else ``CORRAL_EXPERIMENT``, else ``default``).
        #: Unset, a job named alone is looked for in every experiment of the workspace.
        self.experiment = experiment or os.environ.get("CORRAL_EXPERIMENT") or None
        self._located: dict[tuple[str, str], str] = {}
        token = token or config.token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=f"{self.server}/api/v1", headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
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
            time.sleep(_retry_after(response))
        if response.status_code >= 400:
            raise error_from_payload(_json_or_none(response), f"HTTP {response.status_code}: {response.text[:200]}")
        return response

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

    def health(self) -> dict[str, Any]:
        return dict(self._request("GET", "/health").json())

    # ------------------------------------------------------------ workspaces

    def list_workspaces(self) -> list[Workspace]:
        return [Workspace.model_validate(w) for w in self._request("GET", "/workspaces").json()]

    def create_workspace(self, name: str) -> Workspace:
        return Workspace.model_validate(self._request("POST", "/workspaces", json={"name": name}).json())

    def set_quota(
        self, *, max_nodes: int | None = None, max_gpus: int | None = None, workspace: str | None = None
    ) -> Workspace:
        """Nodes and GPUs the workspace's jobs may hold at once (None: no limit). Admins only."""
        body = Quota(max_nodes=max_nodes, max_gpus=max_gpus).model_dump()
        return Workspace.model_validate(self._request("PUT", f"{self._ws(workspace)}/quota", json=body).json())

    def usage(self, *, workspace: str | None = None) -> Usage:
        return Usage.model_validate(self._request("GET", f"{self._ws(workspace)}/usage").json())

    # ------------------------------------------------------------ users

    def create_user(self, name: str, *, admin: bool = False) -> UserCreated:
        """A new user and its token (shown once). Admins only."""
        return UserCreated.model_validate(self._request("POST", "/users", json={"name": name, "admin": admin}).json())

    def list_users(self) -> list[User]:
        return [User.model_validate(u) for u in self._request("GET", "/users").json()]

    # ------------------------------------------------------------ clusters

    def create_cluster(self, spec: SpecInput, *, workspace: str | None = None) -> Cluster:
        data, _ = _load(spec)
        response = self._request("POST", f"{self._ws(workspace)}/clusters", json=data)
        return Cluster.model_validate(response.json())

    def list_clusters(self, *, workspace: str | None = None) -> list[Cluster]:
        return [Cluster.model_validate(c) for c in self._request("GET", f"{self._ws(workspace)}/clusters").json()]

    def get_cluster(self, name: str, *, workspace: str | None = None) -> Cluster:
        return Cluster.model_validate(self._request("GET", f"{self._ws(workspace)}/clusters/{name}").json())

    def delete_cluster(self, name: str, *, workspace: str | None = None) -> None:
        self._request("DELETE", f"{self._ws(workspace)}/clusters/{name}")

    def resize_cluster(
        self, name: str, nodes: int, *, deallocation: str | None = None, workspace: str | None = None
    ) -> Cluster:
        """Grow or shrink a cluster to ``nodes`` (``deallocation``: requeue, terminate or wait)."""
        body = {"nodes": nodes, "deallocation": deallocation}
        return Cluster.model_validate(
            self._request("POST", f"{self._ws(workspace)}/clusters/{name}/resize", json=body).json()
        )

    def autoscale_cluster(
        self,
        name: str,
        *,
        min_nodes: int = 0,
        max_nodes: int,
        idle_timeout: str | float | None = None,
        workspace: str | None = None,
    ) -> Cluster:
        """Scale a cluster with its queue between ``min_nodes`` and ``max_nodes``."""
        body = {"min_nodes": min_nodes, "max_nodes": max_nodes, "idle_timeout": idle_timeout}
        path = f"{self._ws(workspace)}/clusters/{name}/autoscale"
        return Cluster.model_validate(self._request("POST", path, json=body).json())

    def node_exec(
        self, cluster: str, node: str, command: list[str], *, workspace: str | None = None
    ) -> Iterator[tuple[str, str]]:
        """Run ``command`` in the node's environment: yield ``(stream, line)``, then ``("exit", code)``."""
        path = f"{self._ws(workspace)}/clusters/{cluster}/nodes/{node}/exec"
        yield from self._events("POST", path, json={"command": command}, last="exit")

    def preempt_node(self, cluster: str, node: str, *, workspace: str | None = None) -> Node:
        """Evict a node of a low-priority cluster now (notice, grace, eviction), as the cloud would."""
        path = f"{self._ws(workspace)}/clusters/{cluster}/nodes/{node}/preempt"
        return Node.model_validate(self._request("POST", path).json())

    def recover_node(self, cluster: str, node: str, *, workspace: str | None = None) -> Node:
        """Return an unusable node to service (its setup runs again, if the cluster has one)."""
        path = f"{self._ws(workspace)}/clusters/{cluster}/nodes/{node}/recover"
        return Node.model_validate(self._request("POST", path).json())

    def node_logs(self, cluster: str, node: str, *, workspace: str | None = None) -> str:
        """The output of the node's setup.command."""
        return self._request("GET", f"{self._ws(workspace)}/clusters/{cluster}/nodes/{node}/logs").text

    def list_nodes(self, cluster: str, *, workspace: str | None = None) -> list[Node]:
        response = self._request("GET", f"{self._ws(workspace)}/clusters/{cluster}/nodes")
        return [Node.model_validate(n) for n in response.json()]

    # ------------------------------------------------------------ experiments

    def create_experiment(self, name: str, *, workspace: str | None = None) -> Experiment:
        response = self._request("POST", f"{self._ws(workspace)}/experiments", json={"name": name})
        return Experiment.model_validate(response.json())

    def list_experiments(self, *, workspace: str | None = None) -> list[Experiment]:
        response = self._request("GET", f"{self._ws(workspace)}/experiments")
        return [Experiment.model_validate(e) for e in response.json()]

    def get_experiment(self, name: str, *, workspace: str | None = None) -> Experiment:
        return Experiment.model_validate(self._request("GET", f"{self._ws(workspace)}/experiments/{name}").json())

    def delete_experiment(self, name: str, *, workspace: str | None = None) -> None:
        self._request("DELETE", f"{self._ws(workspace)}/experiments/{name}")

    # ------------------------------------------------------------ jobs

    def upload_code(self, directory: str | Path, *, workspace: str | None = None) -> str:
        """Pack ``directory`` (honouring .corralignore/.gitignore) and upload it once; returns its SHA-256."""
        data, sha = pack_directory(directory, max_bytes=DEFAULT_MAX_CODE_BYTES)
        path = f"{self._ws(workspace)}/code/{sha}"
        try:
            self._request("GET", path)
        except CorralError as exc:
            if exc.code != "NotFound":
                raise
            self._request("PUT", path, content=data, headers={"Content-Type": "application/gzip"})
        return sha

    def create_job(
        self,
        spec: SpecInput,
        *,
        experiment: str | None = None,
        name: str | None = None,
        workspace: str | None = None,
        env: dict[str, str] | None = None,
        dry_run: bool = False,
    ) -> Job:
        """Submit a job; ``spec`` is a ``JobSpec``, a mapping or a YAML/JSON file (relative paths are relative
        to the file). ``env`` adds variables to the spec's. With ``dry_run``, the server checks everything a
        submission checks (the spec, the cluster, whether the job could ever fit) and stores nothing."""
        data, base = _load(spec)
        if env:
            data["env"] = {**(data.get("env") or {}), **env}
        code_archive = None
        if data.get("code") is not None:
            directory = base / str(data.pop("code"))
            if dry_run:
                pack_directory(directory, max_bytes=DEFAULT_MAX_CODE_BYTES)  # what would be sent, checked
            else:
                code_archive = self.upload_code(directory, workspace=workspace)
        for key in ("inputs", "outputs"):
            for item in data.get(key) or []:
                if isinstance(item, dict) and isinstance(item.get("path"), str) and "://" not in item["path"]:
                    item["path"] = str((base / item["path"]).resolve())
        experiment = experiment or data.get("experiment") or self.experiment or "default"
        body = {"spec": data, "name": name, "experiment": experiment, "code_archive": code_archive}
        params = {"dry_run": "true"} if dry_run else None
        path = f"{self._ws(workspace)}/experiments/{experiment}/jobs"
        response = self._request("POST", path, json=body, params=params)
        return Job.model_validate(response.json())

    def list_jobs(
        self,
        *,
        experiment: str | None = None,
        state: str | None = None,
        limit: int = 1000,
        workspace: str | None = None,
        all_experiments: bool = False,
    ) -> list[Job]:
        """Jobs of an experiment (``experiment``, else the client's, else ``default``), or of every experiment
        of the workspace; oldest first, with their attempts."""
        params: dict[str, str | int] = {"limit": limit}
        if state:
            params["state"] = state
        if all_experiments:
            path = f"{self._ws(workspace)}/jobs"
        else:
            path = f"{self._ws(workspace)}/experiments/{experiment or self.experiment or 'default'}/jobs"
        return [Job.model_validate(j) for j in self._request("GET", path, params=params).json()]

    def whoami(self) -> User:
        """The user this client's token belongs to."""
        return User.model_validate(self._request("GET", "/users/me").json())

    def get_job(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> Job:
        return Job.model_validate(self._request("GET", self._job(name, experiment, workspace)).json())

    def wait_job(
        self,
        name: str,
        *,
        timeout: float | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Job:
        """Block until the job ends (or ``timeout`` seconds pass) and return it; no sleep-polling."""
        deadline = None if timeout is None else time.monotonic() + timeout
        path = self._job(name, experiment, workspace) + "/wait"
        while True:
            step = 25.0 if deadline is None else max(0.0, min(25.0, deadline - time.monotonic()))
            job = Job.model_validate(self._request("GET", path, params={"timeout": step}, timeout=step + 30).json())
            if job.state.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return job

    def terminate_job(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> Job:
        response = self._request("POST", self._job(name, experiment, workspace) + "/terminate")
        return Job.model_validate(response.json())

    def delete_job(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> None:
        self._request("DELETE", self._job(name, experiment, workspace))

    def job_events(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> list[JobEvent]:
        response = self._request("GET", self._job(name, experiment, workspace) + "/events")
        return [JobEvent.model_validate(e) for e in response.json()]

    def job_logs(
        self,
        name: str,
        *,
        rank: int = 0,
        stream: str = "stdout",
        attempt: int | None = None,
        tail: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> str:
        """A rank's log of the latest attempt, or of ``attempt``; with ``tail``, only its last lines."""
        return b"".join(
            self.stream_logs(
                name, rank=rank, stream=stream, attempt=attempt, tail=tail, experiment=experiment, workspace=workspace
            )
        ).decode(errors="replace")

    def stream_logs(
        self,
        name: str,
        *,
        rank: int = 0,
        stream: str = "stdout",
        attempt: int | None = None,
        tail: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[bytes]:
        """A rank's log as it is now, in chunks as they arrive (a log of any size, in little memory)."""
        params: dict[str, str | int] = {"rank": rank, "stream": stream}
        if attempt is not None:
            params["attempt"] = attempt
        if tail is not None:
            params["tail"] = tail
        path = self._job(name, experiment, workspace) + "/logs"
        try:
            with self._http.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as response:
                _raise_for_error(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None

    def follow_logs(
        self,
        name: str,
        *,
        rank: int = 0,
        attempt: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Iterator[tuple[str, str]]:
        """One rank's lines as ``(stream, line)`` as the job writes them (``("attempt", n)`` when a new attempt
        starts), then ``("end", '{"state": ...}')``. :meth:`follow_job` gives every rank and the job's state."""
        for event in self.follow_job(
            name, ranks=str(rank), attempt=attempt, experiment=experiment, workspace=workspace
        ):
            if event.kind == "log":
                for line in event.lines:
                    yield event.stream or "stdout", line
            elif event.kind == "attempt":
                yield "attempt", str(event.attempt)
            elif event.kind == "end":
                yield "end", json.dumps({"state": event.state, "exit_code": event.exit_code})

    def follow_job(
        self,
        name: str,
        *,
        ranks: str = "all",
        streams: str = "stdout,stderr",
        attempt: int | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
        reconnect_for: float = 120.0,
    ) -> Iterator[FollowEvent]:
        """The job's state and the lines of ``ranks`` (``all``, or ``0,3``) as they come, until its end: typed
        :class:`FollowEvent` objects. A lost connection (a server restart) is taken up again where it stopped, for
        up to ``reconnect_for`` seconds, neither repeating nor losing a line."""
        path = self._job(name, experiment, workspace) + "/logs"
        params: dict[str, str | int] = {"follow": "true", "ranks": ranks, "streams": streams}
        if attempt is not None:
            params["attempt"] = attempt
        cursor: str | None = None
        lost_since: float | None = None
        while True:
            headers = {"Last-Event-ID": cursor} if cursor else {}
            try:
                with connect_sse(
                    self._http, "GET", path, params=params, headers=headers, timeout=httpx.Timeout(30, read=None)
                ) as source:
                    if source.response.status_code >= 500:  # a server going down or starting: try again
                        raise httpx.TransportError(f"HTTP {source.response.status_code}")
                    _raise_for_error(source.response, "cannot follow the job")
                    for sse in source.iter_sse():
                        lost_since = None
                        if sse.event not in FOLLOW_EVENTS:  # a keep-alive ping
                            continue
                        if sse.id:
                            cursor = sse.id
                        event = FollowEvent.model_validate({"kind": sse.event, **json.loads(sse.data)})
                        yield event
                        if event.kind == "end":
                            return
            except (httpx.TransportError, SSEError) as exc:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > reconnect_for:
                    raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None
                time.sleep(1.0)
            # The stream ended without an end event (the server stopped): go on from the cursor.

    def _events(self, method: str, path: str, *, last: str, **kwargs: Any) -> Iterator[tuple[str, str]]:
        """Server-Sent Events as ``(event, data)``, until the ``last`` event."""
        try:
            with connect_sse(self._http, method, path, timeout=httpx.Timeout(30, read=None), **kwargs) as source:
                _raise_for_error(source.response)
                for sse in source.iter_sse():
                    if sse.event == "ping":  # keep-alive
                        continue
                    yield sse.event, sse.data
                    if sse.event == last:
                        return
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"lost the Corral server at {self.server}: {exc}") from None

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
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> Path:
        """Save one file of a job's output, streamed to disk; ``destination`` may be a directory (its folders
        are created)."""
        dest = Path(destination)
        if dest.is_dir():
            dest = dest / Path(path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = self._job(name, experiment, workspace) + "/files/content"
        partial = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream("GET", url, params={"output": output, "path": path}) as response:
                _raise_for_error(response)
                with partial.open("wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
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
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> list[Path]:
        """Save a file, a directory or (``path=""``) a whole output of a job. A directory's files keep their
        folders under ``destination``, which is created; a file goes where :meth:`download_file` puts it."""
        entries = list(self.list_files(name, output=output, path=path, experiment=experiment, workspace=workspace))
        if len(entries) == 1 and not entries[0].is_dir and entries[0].path == path.strip("/"):
            return [self.download_file(name, output=output, path=path, destination=destination,
                                       experiment=experiment, workspace=workspace)]  # fmt: skip
        root = Path(destination)
        root.mkdir(parents=True, exist_ok=True)
        base = path.strip("/")
        saved = []
        for entry in entries:
            relative = entry.path[len(base) :].lstrip("/") if base else entry.path
            if entry.is_dir:
                saved += self.download(name, output=output, destination=root / relative, path=entry.path,
                                       experiment=experiment, workspace=workspace)  # fmt: skip
            else:
                saved.append(self.download_file(name, output=output, path=entry.path, destination=root / relative,
                                                experiment=experiment, workspace=workspace))  # fmt: skip
        return saved


def _raise_for_error(response: httpx.Response, fallback: str | None = None) -> None:
    """Raise the error a streamed response carries (its body read first), as :meth:`Client._request` does."""
    if response.status_code >= 400:
        response.read()
        raise error_from_payload(_json_or_none(response), fallback or f"HTTP {response.status_code}")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


#: The events of following a job (the server also sends keep-alive pings).
FOLLOW_EVENTS = ("state", "log", "attempt", "end")

#: The longest a client waits on a 429 before it sends the request again.
MAX_RETRY_AFTER = 30.0


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER, max(0.1, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0
