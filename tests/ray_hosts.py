"""Separate hosts for the Ray backend's tests: ``scripts/netns-cluster.sh`` (network namespaces, each a Ray
worker with its own private node disk), once per test session.

Skipped where it cannot run (not root, no ``ip``, no Ray); in CI (which runs as root) a missing piece fails.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "netns-cluster.sh"
HOSTS = 3
#: Every host's node disk (a tmpfs in its own mount namespace: not seen from the tests' namespace).
NODE_ROOT = "/var/lib/corral-node"


@dataclass(frozen=True)
class RayHosts:
    address: str
    #: The hosts' addresses, in order (198.18.0.11, .12, ...).
    ips: tuple[str, ...]

    def kill_ray(self, host: int) -> None:
        """SIGKILL host ``host``'s (1-based) Ray processes (its raylet, its workers, the agent among them), and
        nothing else: the jobs' processes, in sessions of their own, are the agent's fence's to end."""
        run_script("kill-ray", str(host))

    def cut(self, host: int) -> None:
        """Take host ``host``'s link down: it runs on, cut off from the Ray cluster and the server."""
        subprocess.run(["ip", "link", "set", f"crl-v{host}", "down"], check=True)

    def restart(self, host: int) -> None:
        """Host ``host`` boots again: what still runs there ends, its Ray worker joins with a new node disk."""
        run_script("restart", str(host))


def script_environment() -> dict[str, str]:
    """The script's settings: Ray and Python of the tests' own environment, wherever the checkout is."""
    tools = {"RAY": str(Path(sys.executable).parent / "ray"), "PYTHON": sys.executable}
    return {**os.environ, **tools, "CORRAL_RAY_NODE_ROOT": NODE_ROOT}


def run_script(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=script_environment())
    assert done.returncode == 0, done.stderr[-3000:]


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the Ray hosts need root (network and mount namespaces)"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "the Ray hosts need iproute2's ip and util-linux's unshare"
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'corral[ray]')"
    return None


@pytest.fixture(scope="session")
def ray_hosts() -> Iterator[RayHosts]:
    reason = why_not()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Ray tests: {reason}")
        pytest.skip(reason)
    env = script_environment()
    up = subprocess.run(["bash", str(SCRIPT), "up", str(HOSTS)], capture_output=True, text=True, env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    try:
        yield RayHosts(up.stdout.strip().splitlines()[-1], tuple(f"198.18.0.{10 + i}" for i in range(1, HOSTS + 1)))
    finally:
        if "ray" in sys.modules:  # a driver of a cluster that goes away complains from its threads
            import ray

            ray.shutdown()
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, env=env, check=False)
