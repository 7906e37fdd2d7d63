"""How a local cluster's virtual nodes share this machine: roots, GPUs, warnings."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from corral.core.errors import InvalidSpec
from corral.core.specs import ClusterSpec

LOCAL_IP = "127.0.0.1"


@functools.cache
def machine_gpus() -> tuple[int, ...]:
    """Indexes of this machine's NVIDIA GPUs (empty without ``nvidia-smi``)."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(line) for line in out.split() if line.strip().isdigit())


def node_root(home: Path, workspace: str, cluster: str, node: str) -> Path:
    return home / "nodes" / workspace / cluster / node


def check_local_nodes(spec: ClusterSpec, count: int) -> list[str]:
    """Warnings about oversubscription of ``count`` nodes of ``spec`` on this machine.

    Raises InvalidSpec when the machine lacks the GPUs the nodes ask for: two
    nodes never share a GPU (``LocalNodes.new_nodes`` gives each its own).
    """
    gpus = machine_gpus()
    need = spec.node.gpus * count
    if need > len(gpus):
        raise InvalidSpec(
            f"node.gpus: {count} nodes x {spec.node.gpus} GPUs need {need} GPUs, this machine has {len(gpus)}",
            details=[{"loc": "node.gpus", "message": f"this machine has {len(gpus)} GPUs"}],
        )
    warnings = []
    cpus = os.cpu_count() or 1
    if spec.node.cpus * count > cpus:
        warnings.append(f"oversubscribed: {count} nodes x {spec.node.cpus} cpus on a machine with {cpus} cpus")
    return warnings
