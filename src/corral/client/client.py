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

import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from corral.client.files import Progress
from corral.client.http import json_or_none
from corral.client.jobs import RemoteJob
from corral.client.logs import LogsMixin
from corral.client.metrics import MetricsMixin
from corral.client.sweeps import SweepsMixin
from corral.client.volumes import VolumesMixin
from corral.core.errors import CorralError, ServerUnavailable, error_from_payload
from corral.core.models import (
    AuditEntry,
    Cluster,
    Experiment,
    JobEvent,
    Member,
    Node,
    Quota,
    Role,
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


class Client(LogsMixin, MetricsMixin, SweepsMixin, VolumesMixin):
    """Every operation of the REST API (see the module's docstring)."""

    def health(self) -> dict[str, Any]:
        """The server's health: ``status`` ok or unhealthy (then ``loop`` says why), version, pid."""
        try:
            response = self._http.get("/health")
        except httpx.TransportError as exc:
            raise ServerUnavailable(f"cannot reach the Corral server at {self.server}: {exc}") from None
        if response.status_code not in (200, 503):
            raise error_from_payload(json_or_none(response), f"HTTP {response.status_code}")
        return dict(response.json())

    # ------------------------------------------------------------ workspaces

    def list_workspaces(self) -> list[Workspace]:
        return [Workspace.model_validate(w) for w in self._request("GET", "/workspaces").json()]

    def create_workspace(self, name: str, *, owner: str | None = None) -> Workspace:
        """A new workspace; ``owner`` (admins only) becomes its owner. A user who may create one owns it."""
        body = {"name": name, "owner": owner}
        return Workspace.model_validate(self._request("POST", "/workspaces", json=body).json())

    def list_members(self, *, workspace: str | None = None) -> list[Member]:
        return [Member.model_validate(m) for m in self._request("GET", f"{self._ws(workspace)}/members").json()]

    def set_member(self, user: str, role: Role, *, workspace: str | None = None) -> Member:
        """Give ``user`` a role in the workspace (``reader``, ``contributor``, ``owner``). Owners and admins."""
        response = self._request("PUT", f"{self._ws(workspace)}/members/{user}", json={"role": role})
        return Member.model_validate(response.json())

    def remove_member(self, user: str, *, workspace: str | None = None) -> None:
        self._request("DELETE", f"{self._ws(workspace)}/members/{user}")

    def set_quota(
        self, *, max_nodes: int | None = None, max_gpus: int | None = None, workspace: str | None = None
    ) -> Workspace:
        """Nodes and GPUs the workspace's jobs may hold at once (None: no limit). Admins only."""
        body = Quota(max_nodes=max_nodes, max_gpus=max_gpus).model_dump()
        return Workspace.model_validate(self._request("PUT", f"{self._ws(workspace)}/quota", json=body).json())

    def usage(self, *, workspace: str | None = None) -> Usage:
        return Usage.model_validate(self._request("GET", f"{self._ws(workspace)}/usage").json())

    # ------------------------------------------------------------ users

    def create_user(
        self, name: str, *, admin: bool = False, unix_user: str | None = None, expires_in: float | None = None
    ) -> UserCreated:
        """A new user and its token (shown once), working ``expires_in`` seconds (None: until revoked); their jobs
        run as ``unix_user`` where the server runs as root (None: an account the server makes). Admins only."""
        body = {"name": name, "admin": admin, "unix_user": unix_user}
        return UserCreated.model_validate(self._request("POST", "/users", json=body, params=_expiry(expires_in)).json())

    def list_users(self) -> list[User]:
        return [User.model_validate(u) for u in self._request("GET", "/users").json()]

    def audit(self, *, user: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` requests that asked to change something (of ``user`` only). Admins only."""
        params: dict[str, str | int] = {"limit": limit}
        if user is not None:
            params["user"] = user
        return [AuditEntry.model_validate(e) for e in self._request("GET", "/audit", params=params).json()]

    def delete_user(self, name: str) -> None:
        """Remove a user; their token stops working at once. Admins only."""
        self._request("DELETE", f"/users/{name}")

    def new_token(self, name: str, *, expires_in: float | None = None) -> UserCreated:
        """A new token for ``name`` (an admin), or for oneself; the old one stops working at once."""
        response = self._request("POST", f"/users/{name}/token", params=_expiry(expires_in))
        return UserCreated.model_validate(response.json())

    def revoke_token(self, name: str) -> None:
        """``name``'s token (an admin), or one's own, stops working at once; ``new_token`` gives one again."""
        self._request("DELETE", f"/users/{name}/token")

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

    def upload_code(
        self, directory: str | Path, *, progress: Progress | None = None, workspace: str | None = None
    ) -> str:
        """Pack ``directory`` (honouring .corralignore and every .gitignore) and upload it unless the server has
        it already (``progress(done, total)`` is called only when it uploads); returns its SHA-256."""
        data, sha = pack_directory(directory, max_bytes=DEFAULT_MAX_CODE_BYTES)
        path = f"{self._ws(workspace)}/code/{sha}"
        try:
            self._request("GET", path)
        except CorralError as exc:
            if exc.code != "NotFound":
                raise
            self._request("PUT", path, content=_chunks(data, progress), headers={
                "Content-Type": "application/gzip", "Content-Length": str(len(data))})  # fmt: skip
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
        progress: Progress | None = None,
        array: dict[str, Any] | None = None,
    ) -> RemoteJob:
        """Submit a job; ``spec`` is a ``JobSpec``, a mapping or a YAML/JSON file (relative paths are relative
        to the file). ``env`` adds variables to the spec's. With ``dry_run``, the server checks everything a
        submission checks (the spec, the cluster, whether the job could ever fit) and stores nothing.
        ``progress`` follows the upload of the spec's ``code`` (see :meth:`upload_code`)."""
        data, base = _load(spec)
        if env:
            data["env"] = {**(data.get("env") or {}), **env}
        if array:  # many tasks of it (``--array 0-99%10``): over the spec's own array settings
            data["array"] = {**(data.get("array") or {}), **array}
        code_archive = self.job_files(data, base, dry_run=dry_run, progress=progress, workspace=workspace)
        experiment = experiment or data.get("experiment") or self.experiment or "default"
        body = {"spec": data, "name": name, "experiment": experiment, "code_archive": code_archive}
        params = {"dry_run": "true"} if dry_run else None
        path = f"{self._ws(workspace)}/experiments/{experiment}/jobs"
        response = self._request("POST", path, json=body, params=params)
        return self._bind(response.json())

    def create_jobs(
        self,
        specs: Sequence[SpecInput],
        *,
        experiment: str | None = None,
        names: Sequence[str | None] | None = None,
        workspace: str | None = None,
    ) -> list[RemoteJob]:
        """Submit many jobs in one request and one transaction (at most 1,000): all are queued, or none, and the
        error of the first refused says which (``jobs[3]: …``). Each spec as :meth:`create_job` takes it; its
        ``code`` is uploaded first (once per archive)."""
        bodies = []
        for index, spec in enumerate(specs):
            data, base = _load(spec)
            code_archive = self.job_files(data, base, dry_run=False, progress=None, workspace=workspace)
            name = names[index] if names is not None else None
            exp = experiment or data.get("experiment") or self.experiment or "default"
            bodies.append({"spec": data, "name": name, "experiment": exp, "code_archive": code_archive})
        path = f"{self._ws(workspace)}/experiments/{experiment or self.experiment or 'default'}/jobs/batch"
        response = self._request("POST", path, json={"jobs": bodies})
        return [self._bind(job) for job in response.json()]

    def job_files(
        self,
        data: dict[str, Any],
        base: Path,
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
        workspace: str | None = None,
    ) -> str | None:
        """What of a job spec is on this machine, made ready to send: its ``code`` packed and uploaded (its
        SHA-256 returned; the field taken out), local inputs' and outputs' paths made absolute from ``base``."""
        code_archive = None
        if data.get("code") is not None:
            directory = base / str(data.pop("code"))
            if dry_run:
                pack_directory(directory, max_bytes=DEFAULT_MAX_CODE_BYTES)  # what would be sent, checked
            else:
                code_archive = self.upload_code(directory, progress=progress, workspace=workspace)
        items_from = (data.get("array") or {}).get("items_from")
        if isinstance(items_from, dict) and isinstance(items_from.get("path"), str) and "://" not in items_from["path"]:
            items_from["path"] = str((base / items_from["path"]).resolve())  # listed by the server, as a path there
        for key in ("inputs", "outputs"):
            for item in data.get(key) or []:
                path = item.get("path") if isinstance(item, dict) else None
                # A URL, or a macro the node resolves ($CORRAL_JOB_MOUNT_ROOT/...), is not a path of this machine.
                if isinstance(path, str) and "://" not in path and not path.startswith("$"):
                    item["path"] = str((base / item["path"]).resolve())
        return code_archive

    def _bind(self, data: Any) -> RemoteJob:
        job = RemoteJob.model_validate(data)
        job._client = self
        return job

    def iter_jobs(
        self,
        *,
        experiment: str | None = None,
        state: str | None = None,
        prefix: str | None = None,
        all_experiments: bool = False,
        page_size: int = 500,
        workspace: str | None = None,
    ) -> Iterator[RemoteJob]:
        """Every job of an experiment (``experiment``, else the client's, else ``default``), or of every
        experiment of the workspace, oldest first with their attempts, fetched ``page_size`` at a time."""
        params: dict[str, str | int] = {"limit": page_size}
        if state:
            params["state"] = state
        if prefix:
            params["prefix"] = prefix
        if all_experiments:
            path = f"{self._ws(workspace)}/jobs"
        else:
            path = f"{self._ws(workspace)}/experiments/{experiment or self.experiment or 'default'}/jobs"
        while True:
            response = self._request("GET", path, params=params)
            yield from (self._bind(j) for j in response.json())
            if "x-next-cursor" not in response.headers:
                return
            params["cursor"] = response.headers["x-next-cursor"]

    def list_jobs(
        self,
        *,
        experiment: str | None = None,
        state: str | None = None,
        prefix: str | None = None,
        limit: int = 1000,
        workspace: str | None = None,
        all_experiments: bool = False,
    ) -> list[RemoteJob]:
        """The first ``limit`` jobs that :meth:`iter_jobs` gives."""
        jobs = self.iter_jobs(experiment=experiment, state=state, prefix=prefix, all_experiments=all_experiments,
                              page_size=min(limit, 10_000), workspace=workspace)  # fmt: skip
        return list(itertools.islice(jobs, limit))

    def whoami(self) -> User:
        """The user this client's token belongs to."""
        return User.model_validate(self._request("GET", "/users/me").json())

    def get_job(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> RemoteJob:
        """The job (``job.wait()``, ``job.logs()`` and the like act on it)."""
        return self._bind(self._request("GET", self._job(name, experiment, workspace)).json())

    def wait_job(
        self,
        name: str,
        *,
        timeout: float | None = None,
        experiment: str | None = None,
        workspace: str | None = None,
    ) -> RemoteJob:
        """Block until the job ends (or ``timeout`` seconds pass) and return it; no sleep-polling."""
        deadline = None if timeout is None else time.monotonic() + timeout
        path = self._job(name, experiment, workspace) + "/wait"
        while True:
            step = 25.0 if deadline is None else max(0.0, min(25.0, deadline - time.monotonic()))
            job = self._bind(self._request("GET", path, params={"timeout": step}, timeout=step + 30).json())
            if job.state.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return job

    def terminate_job(
        self, name: str, *, index: int | None = None, experiment: str | None = None, workspace: str | None = None
    ) -> RemoteJob:
        """Terminate a job (an array: every task; with ``index``, that task only)."""
        params = {"index": index} if index is not None else None
        response = self._request("POST", self._job(name, experiment, workspace) + "/terminate", params=params)
        return self._bind(response.json())

    def delete_job(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> None:
        self._request("DELETE", self._job(name, experiment, workspace))

    def job_events(self, name: str, *, experiment: str | None = None, workspace: str | None = None) -> list[JobEvent]:
        response = self._request("GET", self._job(name, experiment, workspace) + "/events")
        return [JobEvent.model_validate(e) for e in response.json()]


def _expiry(expires_in: float | None) -> dict[str, float]:
    return {} if expires_in is None else {"expires_in": expires_in}


def _chunks(data: bytes, progress: Progress | None, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        if progress is not None:
            progress(min(start + size, len(data)), len(data))
