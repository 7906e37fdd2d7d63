"""Ports for distributed jobs: a block per attempt, never shared by two running attempts.

PyTorch's rendezvous needs one (``MASTER_PORT``), TensorFlow one per task. Blocks
come from a fixed range below Linux's ephemeral ports (32768 and up), so client
sockets never take them; each port is checked free on this machine before it is
given (another program may listen there), and the search goes round the range so
a port just released is the last to be given again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

DEFAULT_RANGE = (29500, 32767)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


class PortAllocator:
    def __init__(self, low: int = DEFAULT_RANGE[0], high: int = DEFAULT_RANGE[1]) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"port range must be within 1..65535 and low <= high, got {low}-{high}")
        self._low, self._high = low, high
        self._next = low
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self, count: int) -> tuple[int, ...] | None:
        """``count`` consecutive free ports, or None when the range has no such block now."""
        if count <= 0:
            return ()
        size = self._high - self._low + 1
        with self._lock:
            start = self._next
            for step in range(size):
                base = self._low + (start - self._low + step) % size
                block = range(base, base + count)
                if block.stop - 1 > self._high or any(p in self._used for p in block):
                    continue
                if all(port_is_free(p) for p in block):
                    self._used.update(block)
                    self._next = block.stop if block.stop <= self._high else self._low
                    return tuple(block)
        return None

    def reserve(self, ports: Iterable[int]) -> None:
        """Ports of an attempt that was running before a restart."""
        with self._lock:
            self._used.update(ports)

    def release(self, ports: Iterable[int]) -> None:
        with self._lock:
            self._used.difference_update(ports)
