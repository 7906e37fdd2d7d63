"""How the control loop is doing, for ``/api/v1/health``: a server whose loop is stuck or failing answers 503.

The loop makes a pass at least every tick (5 s by default) even when nothing happens; a loop whose last pass
ended long ago is stuck (a pass that never returns), one whose passes keep raising is failing (the database
gone, say). The cause goes to the server's log; health names only its kind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Failed passes in a row after which the loop counts as failing (one may be a lost race, three are not).
FAILING_AFTER = 3
#: The least time without a pass that counts as stuck, whatever the tick.
STUCK_AFTER = 30.0


@dataclass
class Liveness:
    tick: float
    last_pass: float = field(default_factory=time.monotonic)
    failures: int = 0
    error: str | None = None

    def passed(self) -> None:
        self.last_pass, self.failures, self.error = time.monotonic(), 0, None

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.error = type(exc).__name__

    def report(self, *, alive: bool) -> dict[str, object]:
        ago = time.monotonic() - self.last_pass
        if not alive:
            status = "stopped"
        elif self.failures >= FAILING_AFTER:
            status = "failing"
        elif ago > max(STUCK_AFTER, 3 * self.tick):
            status = "stuck"
        else:
            status = "ok"
        report: dict[str, object] = {
            "status": status, "last_pass_seconds_ago": round(ago, 3), "failures_in_a_row": self.failures,
        }  # fmt: skip
        if self.error is not None:
            report["error"] = f"{self.error} (the server's log has the cause)"
        return report
