"""The jobs' logs, copied from the machines' disks into their ``stdouterr/`` on the server's.

Every half second (:data:`PULL_SECONDS`) the logs of the processes running are read from each machine's agent,
from where the server's copy ends: the copy's size is the offset, so a restarted server goes on where the last
one stopped and nothing is copied twice. A process's logs are also copied to their end before its exit is
reported (:meth:`LogCopier.copy`), so a job's logs are whole when it ends.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from corral.backends.ray.cluster import RayCluster

log = logging.getLogger(__name__)

#: How often running processes' logs are copied to the server.
PULL_SECONDS = 0.5

#: (path on the machine, path on the server) of one log.
Log = tuple[str, str]


class LogCopier:
    def __init__(self, cluster: RayCluster, running: Callable[[], dict[str, list[Log]]]) -> None:
        """``running``: machine address -> the logs of its processes running now."""
        self._cluster = cluster
        self._running = running
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-ray-logs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.wait(PULL_SECONDS):
            for ip, logs in self._running().items():
                try:
                    self.copy(ip, tuple(logs))
                except Exception:  # the machine is away: its ends say so; the next pull tries again
                    log.debug("copying logs from %s failed", ip, exc_info=True)

    def copy(self, ip: str, logs: tuple[Log, ...]) -> None:
        """Copy what is new of each log of the machine at ``ip`` to the server, to the end."""
        import ray

        if not logs:
            return
        with self._lock:
            remaining = list(dict.fromkeys(logs))
            while remaining:
                offsets = [(node_path, _size(server_path)) for node_path, server_path in remaining]
                chunks = ray.get(self._cluster.agent(ip).read.remote(offsets))
                more = []
                for (node_path, server_path), chunk in zip(remaining, chunks, strict=True):
                    if chunk:
                        with open(server_path, "ab") as f:
                            f.write(chunk)
                        more.append((node_path, server_path))
                remaining = more

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0
