"""The fence: what an agent started dies with it.

Every process an agent starts carries :data:`AGENT_VARIABLE` (the agent's own id) in its environment, and
their children inherit it. Each agent starts one fence process, in a session of its own, that waits for the
agent's process to end — killed with its Ray worker, ended by a raylet that lost its cluster, or by a machine
cut off from the server long enough for Ray to give up on it — and then SIGKILLs every process that carries the
agent's id, scanning until none is left. The server, meanwhile, has reported those processes ``LOST`` and
retried the job elsewhere: a stale attempt does not go on beside the new one.

Run as ``python -m corral.backends.ray.fence <agent pid> <agent id>``.
"""

from __future__ import annotations

import os
import select
import sys
import time

from corral.backends.local.reaper import Reaper

AGENT_VARIABLE = "CORRAL_AGENT_ID"
#: Scans after the agent ended (a process forked during one is caught by the next).
SCANS = 5
SCAN_SECONDS = 0.2


def wait_for(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    pid, agent = int(argv[1]), argv[2]
    wait_for(pid)
    for _ in range(SCANS):
        Reaper.reap({agent.encode()}, AGENT_VARIABLE)
        time.sleep(SCAN_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
