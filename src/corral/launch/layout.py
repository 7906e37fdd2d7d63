"""Where a job's files live, in one place: :class:`JobLayout` (the job dir, shared by every attempt and node)
and :func:`node_job_paths` (what a job has on each node's own disk).

::

    <jobs root>/<workspace>/<experiment>/<job>/<uid>/     the job dir
        attempts/<n>/                                     an attempt's bookkeeping: rank-<r>.exit, prepare-<node>.exit,
                                                          first-failure (MPI), started
        stdouterr/attempt-<n>/                            its logs: stdout-<r>.txt, stderr-<r>.txt, prepare-<node>.txt,
                                                          mpirun.txt (an MPI job's launcher)
        shared/                                           SHARED_JOB_TEMP
        checkpoints/                                      CORRAL_CHECKPOINT_DIR (LATEST names the newest)
    <node root>/jobs/<uid>/                               the job's temp and working dir on a node (code unpacked)
    <node root>/mounts/                                   the node's mounts

Planners, backends and services all go through these names; none spells a path by hand. Plain strings only, no
I/O: a job dir is made normal once (:meth:`JobLayout.under`), and every path below it is joined with ``/`` (the
control loop builds them for every job it starts: ``PurePath`` cost it a quarter of its CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

#: The output id of a job's logs, and their folder in the job dir.
STDOUTERR = "stdouterr"
#: In the attempt dir: ``<rank> <exit code>`` of the first rank that failed, where a launcher (mpirun) runs many
#: ranks as one process.
FIRST_FAILURE = "first-failure"
#: In the attempt dir: every node's prepare is done and the processes were started.
STARTED_MARKER = "started"
#: In the checkpoint directory: the name of the newest checkpoint (written by ``corral.runtime.save``).
CHECKPOINT_LATEST = "LATEST"
#: In each machine's cache of staged inputs: a folder with only ``corral.runtime`` (what a job without an
#: environment imports it from; the backends keep it up to date).
RUNTIME_FOLDER = "corral-runtime"
#: In a job's working directory on a node: what Corral keeps of the job there (its inputs' links, its outputs for
#: volumes, its environment's link, its FUSE mounts' records).
JOB_FILES = ".corral"
#: The link to the job's environment, under its working directory (the shell steps reach it from
#: ``$CORRAL_JOB_TEMP``).
ENVIRONMENT_LINK = f"{JOB_FILES}/env"
#: The variable that names a rank's metrics file (:meth:`JobLayout.metrics`).
METRICS_VARIABLE = "CORRAL_METRICS_FILE"
#: How the environment step's last line in a node's environment log starts (``built``, ``cached`` or ``could not
#: build it``): ``job show`` reads the step as done once the log has one.
ENVIRONMENT_DONE = "corral: environment"


def rank_exit(attempt_dir: str, rank: int) -> str:
    """A process's exit record (``exit <code>``), written by its wrapper when it ends."""
    return f"{attempt_dir}/rank-{rank}.exit"


def prepare_exit(attempt_dir: str, node_rank: int) -> str:
    return f"{attempt_dir}/prepare-{node_rank}.exit"


@dataclass(frozen=True)
class JobLayout:
    job_dir: str

    @classmethod
    def under(cls, jobs_root: str | PurePath, workspace: str, experiment: str, job: str, uid: str) -> JobLayout:
        return cls(str(PurePath(jobs_root, workspace, experiment, job, uid)))

    def attempt_dir(self, attempt: int) -> str:
        return f"{self.job_dir}/attempts/{attempt}"

    @property
    def logs_root(self) -> str:
        return f"{self.job_dir}/{STDOUTERR}"

    def logs_dir(self, attempt: int) -> str:
        """An attempt's logs (every attempt keeps its own)."""
        return f"{self.job_dir}/{STDOUTERR}/attempt-{attempt}"

    def upload_manifest(self, attempt: int, node_rank: int) -> str:
        """What a node's upload of the job's outputs to volumes wrote: one JSON line per file."""
        return f"{self.logs_dir(attempt)}/upload-manifest-{node_rank}.jsonl"

    def params(self, attempt: int) -> str:
        """``$CORRAL_PARAMS_FILE``: a sweep's trial's parameters, as JSON."""
        return f"{self.attempt_dir(attempt)}/params.json"

    def array_items(self, attempt: int) -> str:
        """``$CORRAL_ARRAY_ITEMS_FILE``: a task's items, as a JSON list."""
        return f"{self.attempt_dir(attempt)}/items.json"

    def metrics(self, attempt: int, rank: int) -> str:
        """``$CORRAL_METRICS_FILE`` of a rank: the metrics it reports, one JSON object a line (``corral.runtime``)."""
        return f"{self.logs_dir(attempt)}/metrics-{rank}.jsonl"

    def log(self, attempt: int, stream: str, rank: int) -> str:
        """``stdout``/``stderr`` of a rank, ``prepare`` of a node, ``mpirun`` (the launcher's, ``rank`` unused)."""
        name = "mpirun.txt" if stream == "mpirun" else f"{stream}-{rank}.txt"
        return f"{self.logs_dir(attempt)}/{name}"

    @property
    def shared(self) -> str:
        return f"{self.job_dir}/shared"

    @property
    def checkpoints(self) -> str:
        return f"{self.job_dir}/checkpoints"


def node_job_paths(node_root: str, job_uid: str) -> dict[str, str]:
    """What a job has on a node's own disk: its temp dir (also its working dir), their parent, its mount roots."""
    job_root = f"{node_root}/jobs/{job_uid}"
    return {
        "job_temp_dir": f"{node_root}/jobs",
        "job_temp": job_root,
        "job_mount_root": f"{job_root}/mounts",
        "mount_root": f"{node_root}/mounts",
        # Inputs staged from volumes: a link each, to its copy in the machine's cache (corral.data.stage).
        "inputs": f"{job_root}/{JOB_FILES}/inputs",
        # Outputs going to volumes: written here on each node, uploaded when the job's processes have ended.
        "outputs": f"{job_root}/{JOB_FILES}/outputs",
        # The job's environment: a link to it, in the machine's cache (corral.envs.build).
        "environment": f"{job_root}/{ENVIRONMENT_LINK}",
    }
