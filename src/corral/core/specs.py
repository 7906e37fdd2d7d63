"""The specs users write: a cluster (compute) and a job (work), from YAML or JSON.

Every model is strict (``extra="forbid"``): a misspelt key is an error, never a
silently ignored setting. :func:`corral.core.spec_parsing.parse_spec` turns pydantic's errors into
:class:`~corral.core.errors.InvalidSpec` whose message names each field path and
what was expected, e.g. ``node_count: must be >= 1, got 0``.

Toolkits: a job names exactly one of ``custom``, ``pytorch``, ``tensorflow``,
``horovod``, ``mpi``, ``chainer``, ``cntk``, ``caffe2``, with the fields Batch AI's
toolkit settings had, in snake_case (``pythonScriptFilePath`` is ``script``,
``commandLineArgs`` is ``args``, ``processCount`` is ``processes``).

It is long on purpose: every field of a cluster's and a job's spec, and the few types they share, in one place
(the JSON schema of the API is made from them). A volume's spec, which is neither, is ``volume_specs``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from corral.core.units import parse_duration, parse_size

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: The kernel's limit on one argument or one ``NAME=value`` of a process's environment (MAX_ARG_STRLEN, 128 KiB
#: with its NUL): a longer command or variable could never be started, so it is refused at submission.
MAX_ARG_BYTES = 128 * 1024 - 1
#: The most processes one node of a job may run (processes_per_node, an MPI job's ranks over its nodes).
MAX_PROCESSES = 4096
#: The most inputs, outputs or retried exit codes one job lists.
MAX_LIST_ITEMS = 256
#: The longest duration a spec may give (``max_wall_clock``, ``idle_timeout``, ``preempt_after``): a year.
MAX_DURATION_SECONDS = 366 * 86400.0
#: The longest ``termination_grace``: a day.
MAX_GRACE_SECONDS = 86400.0


def _no_bool(value: object) -> object:
    """JSON's ``true`` is not the number 1 here: a boolean where a number belongs is an error."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not a boolean, got {value!r}")
    return value


def _no_nul(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _fits_argument(value: object) -> object:
    if isinstance(value, str) and len(value.encode(errors="surrogatepass")) > MAX_ARG_BYTES:
        raise ValueError(f"is longer than {MAX_ARG_BYTES} bytes, the most one process argument may hold")
    return value


def _no_dot_segments(value: object) -> object:
    if isinstance(value, str) and any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"must not have '.' or '..' segments, got {value!r}")
    return value


def _scalar_as_text(value: object) -> object:
    """``env: {LR: 0.1, DEBUG: true}`` means the text a shell would see: ``0.1``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


#: Every integer of a spec: a boolean is refused (pydantic would take ``true`` as 1).
Int = Annotated[int, BeforeValidator(_no_bool)]
#: Text that reaches a process (a command, an argument, a variable's value): no NUL, within one argument's limit.
Text = Annotated[str, AfterValidator(_no_nul), AfterValidator(_fits_argument)]
#: A variable's value: text, or a number or boolean written without quotes (taken as the text it reads as).
EnvValue = Annotated[Text, BeforeValidator(_scalar_as_text)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
#: A sweep's parameter: what ``${name}`` and ``CORRAL_PARAM_<NAME>`` spell.
ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


def param_text(value: object) -> str:
    """A parameter as text (in ``${name}`` and ``CORRAL_PARAM_<NAME>``): ``true``/``false`` as YAML writes them."""
    return str(value).lower() if isinstance(value, bool) else str(value)


EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, max_length=1024)]
Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(allow_inf_nan=False, le=MAX_DURATION_SECONDS)]
Priority = Literal["low", "normal", "high"]

PRIORITY_RANK: dict[str, int] = {"low": 0, "normal": 1, "high": 2}
TOOLKITS = ("custom", "pytorch", "tensorflow", "horovod", "mpi", "chainer", "cntk", "caffe2")
#: Toolkits whose processes OpenMPI's mpirun starts (on the job's first node, for every node).
MPI_TOOLKITS = ("mpi", "horovod", "chainer", "cntk")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- cluster


class NodeShape(Strict):
    cpus: Int = Field(1, ge=1, le=MAX_PROCESSES)
    gpus: Int = Field(0, ge=0, le=64)
    memory: Size | None = None


class ScaleSpec(Strict):
    """Manual (``nodes``) or automatic (``min_nodes``/``max_nodes``) scaling."""

    nodes: Int | None = Field(None, ge=0)
    deallocation: Literal["requeue", "terminate", "wait"] = "requeue"
    min_nodes: Int | None = Field(None, ge=0)
    max_nodes: Int | None = Field(None, ge=1)
    initial_nodes: Int | None = Field(None, ge=0)
    idle_timeout: Duration | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> ScaleSpec:
        auto = [self.min_nodes, self.max_nodes, self.initial_nodes, self.idle_timeout]
        if self.nodes is not None and any(v is not None for v in auto):
            raise ValueError("give either nodes (manual) or min_nodes/max_nodes (automatic), not both")
        if self.nodes is None and self.max_nodes is None:
            raise ValueError("give nodes (manual scale) or max_nodes (automatic scale)")
        if self.max_nodes is not None:
            low = self.min_nodes or 0
            if low > self.max_nodes:
                raise ValueError(f"min_nodes ({low}) must be <= max_nodes ({self.max_nodes})")
            if self.initial_nodes is not None and not low <= self.initial_nodes <= self.max_nodes:
                raise ValueError(f"initial_nodes must be between min_nodes and max_nodes, got {self.initial_nodes}")
        return self

    @property
    def is_auto(self) -> bool:
        return self.nodes is None


class SetupSpec(Strict):
    command: Text
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)


#: A relative path of one or more ``/``-separated names: no ``.`` or ``..`` segment, so it never leads out.
RelativePath = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", max_length=1024),
    AfterValidator(_no_dot_segments),
]


class MountSpec(Strict):
    """A volume where a job's processes find it: ``CORRAL_MOUNT_ROOT/<path>`` for a cluster's mounts (every job
    on its nodes), ``CORRAL_JOB_MOUNT_ROOT/<path>`` for a job's. A ``path`` volume is the directory itself; an
    object store's is copied in as an input is (``mode: copy``, read-mostly data), or mounted with rclone
    (``mode: mount``: FUSE, its writes written back to the store before the job ends; S3 volumes)."""

    volume: Name
    path: RelativePath
    mode: Literal["copy", "mount"] = "copy"


#: A package index or a folder of wheels: an http(s) URL, or an absolute path on the nodes.
IndexLocation = Annotated[
    str, StringConstraints(pattern=r"^(https?://\S+|/\S*)$", max_length=2048), AfterValidator(_no_nul)
]
#: A requirement as pip and uv read it (``numpy==2.1``, ``torch>=2.4; python_version>'3.9'``): not an option.
Requirement = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.][^\n\r]*$", min_length=1, max_length=1024),
    AfterValidator(_no_nul),
]


class EnvironmentSpec(Strict):
    """The Python environment a job's processes run in, built with uv on every node (``docs/environments.md``)."""

    #: The interpreter: a version uv finds on the node (``3.11``) or a path; none: the node's python3.
    python: Annotated[str, StringConstraints(pattern=r"^(\d+(\.\d+){0,2}|/\S+)$", max_length=1024)] | None = None
    #: A requirements file in the job's code (relative to its working directory).
    requirements: RelativePath | None = None
    packages: list[Requirement] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    index_url: IndexLocation | None = None
    extra_index_url: list[IndexLocation] = Field(default_factory=list, max_length=16)
    find_links: list[IndexLocation] = Field(default_factory=list, max_length=16)
    #: Use no package index at all (only ``find_links``): for machines that reach none.
    no_index: bool = False
    env_vars: dict[EnvName, EnvValue] = Field(default_factory=dict)
    #: ``environment: server``: the server's own environment (its virtualenv first on PATH), as before.
    server: bool = False

    @model_validator(mode="after")
    def _server_alone(self) -> EnvironmentSpec:
        if self.server and self.model_dump(exclude={"server"}) != EnvironmentSpec().model_dump(exclude={"server"}):
            raise ValueError("environment: server takes nothing else (it is the server's own environment)")
        return self


def _environment(value: object) -> object:
    """``environment: server`` is ``{server: true}``; anything else is a mapping (or an error naming it)."""
    if value == "server":
        return {"server": True}
    if isinstance(value, str):
        raise ValueError(f"must be a mapping (python, requirements, packages, ...) or 'server', got {value!r}")
    return value


Environment = Annotated[EnvironmentSpec, BeforeValidator(_environment)]


class ClusterSpec(Strict):
    name: Name
    backend: Literal["local", "ray"] = "local"
    node: NodeShape = NodeShape()
    priority: Literal["dedicated", "low"] = "dedicated"
    scale: ScaleSpec = ScaleSpec(nodes=1)
    setup: SetupSpec | None = None
    mounts: list[MountSpec] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    #: The default environment of its jobs (a job's own ``environment`` wins); ``server``: the server's own.
    environment: Environment | None = None
    #: A high-priority job that has waited this long may preempt (requeue) running low-priority jobs.
    preempt_after: Duration | None = Field(None, ge=0)


def node_gpus(stored: Mapping[str, Any]) -> int:
    """GPUs per node of a cluster spec as stored (JSON), without validating the whole spec again."""
    return int((stored.get("node") or {}).get("gpus", 0))


# ---------------------------------------------------------------- job


class CustomToolkit(Strict):
    command: Text = Field(min_length=1)


class PythonScript(Strict):
    """A Python script with its arguments; ``args`` is shell text, its ``$VARIABLES`` expanded on the node."""

    script: Text = Field(min_length=1)
    args: Text = ""
    interpreter: Text = Field("python3", min_length=1)


class PyTorchToolkit(PythonScript):
    #: Processes on every node; default: the node's GPUs, or 1 without GPUs.
    processes_per_node: Int | None = Field(None, ge=1, le=MAX_PROCESSES)
    #: torch.distributed backend; default nccl on GPU nodes, gloo otherwise. ``mpi`` launches through mpirun.
    backend: Literal["gloo", "nccl", "mpi"] | None = None


class TensorFlowToolkit(Strict):
    script: Text = Field(min_length=1)
    interpreter: Text = Field("python3", min_length=1)
    master_args: Text = ""
    worker_args: Text = ""
    ps_args: Text = ""
    #: Worker tasks besides the chief; default node_count (none for a one-node job that gives no counts).
    worker_count: Int | None = Field(None, ge=0, le=MAX_PROCESSES)
    #: Parameter servers; default 1 when the job is distributed.
    ps_count: Int | None = Field(None, ge=0, le=MAX_PROCESSES)


class MpiToolkit(Strict):
    command: Text = Field(min_length=1)
    #: Ranks in all; default node_count (one per node).
    processes: Int | None = Field(None, ge=1, le=MAX_PROCESSES)


class MpiScriptToolkit(PythonScript):
    """Horovod and Chainer(MN): a script run by mpirun; ``processes`` defaults to the job's GPUs, or node_count."""

    processes: Int | None = Field(None, ge=1, le=MAX_PROCESSES)


class CntkToolkit(Strict):
    language: Literal["python", "brainscript"] = "python"
    script: Text | None = Field(None, min_length=1)
    config_file: Text | None = Field(None, min_length=1)
    args: Text = ""
    interpreter: Text = Field("python3", min_length=1)
    processes: Int | None = Field(None, ge=1, le=MAX_PROCESSES)

    @model_validator(mode="after")
    def _language_fields(self) -> CntkToolkit:
        if self.language == "python" and (self.script is None or self.config_file is not None):
            raise ValueError("language python needs script (and no config_file)")
        if self.language == "brainscript" and (self.config_file is None or self.script is not None):
            raise ValueError("language brainscript needs config_file (and no script)")
        return self


class Caffe2Toolkit(PythonScript):
    """One process per node, each a shard; shards meet through a file store in the shared job temp."""


def _local_path(value: object) -> object:
    """``file:///data`` and ``/data`` name the same directory; keep the plain path."""
    return value.removeprefix("file://") if isinstance(value, str) else value


LocationPath = Annotated[
    str, BeforeValidator(_local_path), StringConstraints(min_length=1, max_length=4096), AfterValidator(_no_nul)
]
#: Where an input comes from (or an output goes): one of the workspace's volumes (``vol://NAME/prefix``), a bucket
#: or container that one of its volumes holds (``s3://bucket/prefix``, ``az://container/prefix``), or a path every
#: node sees.
STORE_SCHEMES = ("vol", "s3", "az")


#: Roots an input's or output's path may start with (Batch AI's macros): resolved on each node, where they are.
MOUNT_MACROS = {
    "CORRAL_MOUNT_ROOT": "mount_root",
    "CORRAL_JOB_MOUNT_ROOT": "job_mount_root",
    "AZ_BATCHAI_MOUNT_ROOT": "mount_root",
    "AZ_BATCHAI_JOB_MOUNT_ROOT": "job_mount_root",
}


def mount_macro(path: str) -> tuple[str, str] | None:
    """``("mount_root" | "job_mount_root", the rest)`` of ``$CORRAL_MOUNT_ROOT/rest`` (or ``${...}``, or the
    ``AZ_BATCHAI_`` twin); None for a path without one. Raise ``ValueError`` for another ``$`` variable."""
    if not path.startswith("$"):
        return None
    name, _, rest = path[1:].partition("/")
    name = name.removeprefix("{").removesuffix("}") if name.startswith("{") else name
    if name not in MOUNT_MACROS:
        raise ValueError(f"may start with ${' or $'.join(MOUNT_MACROS)} only, got {path.split('/')[0]!r}")
    return MOUNT_MACROS[name], rest.strip("/")


def _input_location(value: object) -> object:
    if isinstance(value, str) and value.startswith("$"):
        mount_macro(value)
        _no_dot_segments(value.split("/", 1)[1] if "/" in value else "")
        return value
    if not isinstance(value, str) or "://" not in value:
        return value
    scheme, _, rest = value.partition("://")
    if scheme not in STORE_SCHEMES:
        raise ValueError(f"must be a path or a vol://, s3:// or az:// URL, got the scheme {scheme!r}")
    if not rest.split("/", 1)[0]:
        raise ValueError(f"must name a {'volume' if scheme == 'vol' else 'bucket or container'}: {value!r}")
    _no_dot_segments(rest.strip("/"))
    return value


InputLocation = Annotated[LocationPath, AfterValidator(_input_location)]


def store_location(path: str) -> tuple[str, str, str] | None:
    """``(scheme, volume or bucket or container, key prefix)`` of a volume or store URL; None for a path."""
    if "://" not in path:
        return None
    scheme, _, rest = path.partition("://")
    first, _, key = rest.strip("/").partition("/")
    return scheme, first, key


class InputSpec(Strict):
    id: EnvName
    path: InputLocation


class OutputSpec(Strict):
    id: EnvName
    path: InputLocation
    #: On a volume: also upload what the nodes have written this often while the job runs (``5m``).
    sync_every: Duration | None = Field(None, ge=1)
    #: A relative path under the output's directory: no ``.`` or ``..`` segment, so it never leads out of it.
    suffix: (
        Annotated[
            str,
            StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", max_length=1024),
            AfterValidator(_no_dot_segments),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _sync_on_volume(self) -> OutputSpec:
        if self.sync_every is not None and store_location(self.path) is None:
            raise ValueError("sync_every: only an output on a volume (vol://, s3://, az://) is synced")
        return self


class PrepareSpec(Strict):
    command: Text = Field(min_length=1)


class MetricsSpec(Strict):
    """Metrics read from each rank's stdout as it grows (Batch AI's way; ``docs/metrics.md``): on each line that
    ``pattern`` matches, every named group is a metric, and a group named ``step`` is the step (else the count of
    the series' earlier matches)."""

    model_config = ConfigDict(**Strict.model_config, populate_by_name=True, serialize_by_alias=True)
    from_: Literal["stdout"] = Field("stdout", alias="from")
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=1024)]

    @field_validator("pattern")
    @classmethod
    def _named_groups(cls, value: str) -> str:
        try:
            groups = set(re.compile(value).groupindex)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if not groups - {"step"}:
            raise ValueError(
                f"name the value of each metric with a group, e.g. 'loss=(?P<loss>[0-9.eE+-]+)', got {value!r}"
            )
        return value


RetryOn = Literal["node_failure", "preemption", "failure"]


def _retry_on_default() -> list[RetryOn]:
    return ["node_failure", "preemption"]


class RetrySpec(Strict):
    """When a job's attempt ends badly, whether it goes back to the queue for another one."""

    #: Attempts in all, the first included.
    max_attempts: Int = Field(3, ge=1, le=100)
    #: What is retried besides the listed exit codes: a lost node, a preemption (or a node removed by a resize),
    #: ``failure``: any non-zero exit of the job's own processes (what an array's ``retry_per_index`` sets).
    on: list[RetryOn] = Field(default_factory=_retry_on_default)
    #: Exit codes of the job's own processes that are worth another attempt (others fail the job).
    exit_codes: list[Annotated[Int, Field(ge=1, le=255)]] = Field(default_factory=list, max_length=255)


#: Tasks of one array.
MAX_ARRAY_TASKS = 1_000_000


class ItemsFrom(Strict):
    """An array's items: the files of a folder on the server's machine that match ``glob``, ``per_task`` a task."""

    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    glob: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "*"
    per_task: Int = Field(1, ge=1, le=100_000)


class ArraySpec(Strict):
    """A job array: ``count`` tasks of the job (``items``: one a task; ``items_from``: files of a folder), each
    with ``CORRAL_ARRAY_INDEX`` (``docs/arrays.md``)."""

    count: Int | None = Field(None, ge=1, le=MAX_ARRAY_TASKS)
    #: One a task (any JSON value); ``items_from`` becomes these at submission (``per_task`` files a task).
    items: list[Any] | None = Field(None, min_length=1, max_length=MAX_ARRAY_TASKS)
    items_from: ItemsFrom | None = None
    #: Tasks queued or running at once (else as many as the cluster has nodes, twice over).
    parallelism: Int | None = Field(None, ge=1, le=100_000)
    #: Attempts an index gets after its first fails (any failure), each index its own.
    retry_per_index: Int = Field(0, ge=0, le=99)
    #: The array stops making tasks once this many indexes failed (it ends failed).
    max_failed: Int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ArraySpec:
        given = [k for k in ("count", "items", "items_from") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of count, items, items_from, got {given or 'none'}")
        return self


class ArrayTask(Strict):
    """What a task of an array is (set by the server when it makes the task)."""

    index: Int = Field(ge=0)
    count: Int = Field(ge=1)
    #: The array's name and uid: the task's outputs go under the array's folder, in ``<index>/``.
    job: Name
    uid: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    items: list[Any] = Field(default_factory=list)


class LimitsSpec(Strict):
    max_wall_clock: Duration | None = None
    termination_grace: Duration = Field(30.0, le=MAX_GRACE_SECONDS)


class JobSpec(Strict):
    #: "Exactly one toolkit", as JSON Schema can say it: one toolkit field is a mapping, the others absent or null.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"properties": {name: {"type": "object"}}, "required": [name]} for name in TOOLKITS]
        }
    )

    name: Name | None = None
    experiment: Name | None = None
    cluster: Name
    node_count: Int = Field(1, ge=1)
    priority: Priority = "normal"
    code: str | None = None
    custom: CustomToolkit | None = None
    pytorch: PyTorchToolkit | None = None
    tensorflow: TensorFlowToolkit | None = None
    horovod: MpiScriptToolkit | None = None
    mpi: MpiToolkit | None = None
    chainer: MpiScriptToolkit | None = None
    cntk: CntkToolkit | None = None
    caffe2: Caffe2Toolkit | None = None
    inputs: list[InputSpec] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    outputs: list[OutputSpec] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    mounts: list[MountSpec] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    #: The Python environment its processes run in (else the cluster's; ``server``: the server's own).
    environment: Environment | None = None
    #: Each ``NAME=value`` within one argument's limit; all of them together within the server's ``max_env_bytes``.
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    secrets: dict[EnvName, EnvValue] = Field(default_factory=dict)
    prepare: PrepareSpec | None = None
    #: A sweep's trial: its parameters (``CORRAL_PARAM_<NAME>``, and all in ``CORRAL_PARAMS_FILE``, as JSON).
    params: dict[ParamName, bool | Int | float | Text] = Field(default_factory=dict, max_length=MAX_LIST_ITEMS)
    #: Many tasks of this job (``docs/arrays.md``).
    array: ArraySpec | None = None
    #: A task of an array: set by the server.
    array_task: ArrayTask | None = None
    #: Metrics read from stdout (besides ``corral.runtime.report`` and ``$CORRAL_METRICS_FILE``, always on).
    metrics: MetricsSpec | None = None
    limits: LimitsSpec = LimitsSpec()
    retry: RetrySpec = RetrySpec()

    @model_validator(mode="after")
    def _one_toolkit(self) -> JobSpec:
        given = [name for name in TOOLKITS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one toolkit ({' | '.join(TOOLKITS)}), got {', '.join(given) or 'none'}")
        for kind, items in (("inputs", self.inputs), ("outputs", self.outputs)):
            ids = [item.id for item in items]
            if len(ids) != len(set(ids)):
                raise ValueError(f"{kind}: ids must be unique, got {ids}")
        clash = set(self.env) & set(self.secrets)
        if clash:
            raise ValueError(f"env and secrets both set {sorted(clash)}")
        return self

    @property
    def toolkit(self) -> str:
        return next(name for name in TOOLKITS if getattr(self, name) is not None)
