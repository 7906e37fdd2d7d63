"""Server settings, bound to ``CORRAL_*`` environment variables; read them through :func:`get_settings`."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.core.specs import Size
from corral.storage.code import DEFAULT_MAX_CODE_BYTES, DEFAULT_MAX_CODE_MEMBERS, DEFAULT_MAX_CODE_UNPACKED_BYTES


def default_home() -> Path:
    return Path("~/.corral").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_", extra="ignore")

    #: Where the database, token, code archives, job directories and node roots live.
    home: Path = Field(default_factory=default_home)
    #: SQLAlchemy URL; SQLite at ``<home>/corral.db`` when unset.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8765
    #: Root of job directories (stdouterr, checkpoints, attempts); ``<home>/jobs`` when unset.
    jobs_root: Path | None = None
    # ---- limits on what one request may make the server hold or do (docs/limits.md lists them all)
    #: A code archive's size as uploaded (gzipped).
    max_code_bytes: int = Field(DEFAULT_MAX_CODE_BYTES, ge=1)
    #: A code archive's size once unpacked (what every node of a job writes), and its number of members.
    max_code_unpacked_bytes: int = Field(DEFAULT_MAX_CODE_UNPACKED_BYTES, ge=1)
    max_code_members: int = Field(DEFAULT_MAX_CODE_MEMBERS, ge=1)
    #: Nodes a cluster may have (``scale.nodes``, ``max_nodes``, a resize or an automatic scale).
    max_nodes_per_cluster: int = Field(10_000, ge=1)
    #: A job's ``env`` and ``secrets`` together, names and values in bytes (Linux starts no process whose
    #: arguments and environment pass 2 MiB; Corral's own variables need room too).
    max_env_bytes: int = Field(256 * 1024, ge=1)
    #: Jobs one user may have queued at once (0: no limit); a submission past it gets 429.
    max_queued_jobs_per_user: int = Field(10_000, ge=0)
    #: Submissions per second one user may make on average (0: no limit), with bursts of ``submit_burst``;
    #: past it a submission gets 429 with ``Retry-After``.
    submit_rate: float = Field(50.0, ge=0, allow_inf_nan=False)
    submit_burst: int = Field(1000, ge=1)
    #: Safety tick of the control loop (it is woken by events; this only bounds a missed one).
    scheduler_tick: float = 5.0
    #: After a wake-up the control loop waits this long for more events, to handle them in one transaction:
    #: more throughput under load for a few milliseconds of latency.
    scheduler_coalesce: float = 0.005
    log_level: str = "info"
    #: Run each user's jobs, setups and node commands as their own Unix account (made for them, or one an admin
    #: names). Unset: yes when the server runs as root (it must, to switch accounts), else one-user mode.
    run_as_users: bool | None = None
    #: Let every user create workspaces (they own those they create); else only admins do.
    users_create_workspaces: bool = False
    #: Serve the OpenAPI schema and the docs page without a token (they list every route and field).
    public_docs: bool = False
    #: Fair share: usage this many seconds old counts half (Slurm's PriorityDecayHalfLife; default 7 days).
    fairshare_half_life: float = Field(7 * 86400.0, gt=0)
    #: Ports given to distributed jobs (PyTorch's MASTER_PORT, TensorFlow's tasks), ``low-high``.
    port_range: str = Field("29500-32767", pattern=r"^\d{1,5}-\d{1,5}$")
    # ---- the Ray backend (docs/ray.md): set ray_address and the clusters' nodes are that Ray cluster's machines
    #: ``host:port`` of the Ray head (its GCS), or ``auto`` where this machine is part of the Ray cluster.
    ray_address: str | None = None
    #: Every node's own folder on its machine (logs and exit records of its processes, the jobs' working dirs).
    ray_node_root: str = "/var/lib/corral-node"
    #: The custom resource that marks a Ray machine as Corral's (``ray start --resources '{"corral_node": 1}'``).
    ray_node_resource: str = "corral_node"
    ray_namespace: str = "corral"
    #: The most bytes of inputs staged from volumes that each machine keeps (``20GiB``; least recently used go).
    input_cache_limit: Size = Field(20 * 2**30, ge=0)
    #: ``sys.setswitchinterval`` of the server process, in seconds (CPython's default is 0.005).
    gil_switch_interval: float = 0.0005
    #: Run the control loop in a process of its own, beside the API's (each then has a core and an interpreter
    #: lock). Unset: yes where the server may use more than one core, with the local backend.
    loop_process: bool | None = None

    @property
    def isolates_users(self) -> bool:
        return self.run_as_users if self.run_as_users is not None else os.geteuid() == 0

    @model_validator(mode="after")
    def _loop_process_backend(self) -> Settings:
        if self.loop_process and self.ray_address:
            raise ValueError(
                "CORRAL_LOOP_PROCESS=true: with the Ray backend (CORRAL_RAY_ADDRESS) the control loop runs as a "
                "thread of the server (its node commands and logs need the machines the loop's backend follows); "
                "leave it unset"
            )
        return self

    @property
    def runs_loop_process(self) -> bool:
        if self.loop_process is not None:
            return self.loop_process
        return len(os.sched_getaffinity(0)) > 1 and not self.ray_address

    @property
    def ports(self) -> tuple[int, int]:
        low, _, high = self.port_range.partition("-")
        return int(low), int(high)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'corral.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.jobs_root or self.home / "jobs"

    @property
    def code_dir(self) -> Path:
        return self.home / "code"

    @property
    def code_marks_dir(self) -> Path:
        """A mark for each workspace an archive was uploaded to (services/code.py)."""
        return self.home / "code-workspaces"

    @property
    def token_file(self) -> Path:
        return self.home / "token"

    @property
    def secrets_key_file(self) -> Path:
        """The key job secrets are sealed with in the database (lose it and they cannot be read)."""
        return self.home / "secrets.key"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.pid"


class InvalidSettings(ValueError):
    """A setting the server cannot start with, each named by its variable."""


def get_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise InvalidSettings("; ".join(
            (f"CORRAL_{str(e['loc'][0]).upper()}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )) from None  # fmt: skip
