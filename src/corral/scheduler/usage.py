"""Fair-share usage: node-seconds per user, decayed over time as Slurm's fair share does.

Usage recorded ``age`` seconds ago counts ``2 ** (-age / half_life)``: what a user ran
a week ago (the default half-life) weighs half what they ran just now. Running jobs
count their node-seconds so far, undecayed. The control loop keeps one of these in
memory, loads it from the attempts table at start and adds each attempt as it ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class Usage:
    def __init__(self, half_life: float) -> None:
        if half_life <= 0:
            raise ValueError(f"fair-share half-life must be > 0 seconds, got {half_life}")
        self.half_life = half_life
        self._rate = math.log(2) / half_life
        #: User -> (decayed value, as of when).
        self._values: dict[str, tuple[float, float]] = {}

    def _decayed(self, user: str, now: float) -> float:
        value, at = self._values.get(user, (0.0, now))
        return value * math.exp(-self._rate * max(0.0, now - at))

    def add(self, user: str, node_seconds: float, at: float) -> None:
        self._values[user] = (self._decayed(user, at) + node_seconds, at)

    def snapshot(self, now: float, running: Iterable[tuple[str, float]] = ()) -> dict[str, float]:
        """User -> decayed usage now, plus the node-seconds so far of their running jobs."""
        values = {user: self._decayed(user, now) for user in self._values}
        for user, node_seconds in running:
            values[user] = values.get(user, 0.0) + node_seconds
        return values
