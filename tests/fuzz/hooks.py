"""Schemathesis hooks for the fuzz run (loaded through ``SCHEMATHESIS_HOOKS``).

Random names rarely name what exists, so most requests would stop at 404. Half the
time the hooks point a request at what the fuzz server has (workspace ``default``,
experiment ``default``, cluster ``local`` and its ``node-0``, the job ``fuzz-job``),
so the fuzzer's specs reach validation, the queue and the control loop. Requests that delete a user or
replace a token always name the throwaway user ``fuzz-user``: the run must keep its own token.
"""

from __future__ import annotations

import random
from typing import Any

import schemathesis

KNOWN = {"ws": "default", "exp": "default", "node": "node-0"}
_random = random.Random(7)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    path = case.operation.path
    if path.startswith("/api/v1/users/{name}"):
        # Deleting a user or replacing their token: always the throwaway user, never the fuzzer's own admin.
        case.path_parameters["name"] = "fuzz-user"
        return
    if _random.random() < 0.5:
        return
    for name, value in KNOWN.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = value
    if "name" in (case.path_parameters or {}):
        case.path_parameters["name"] = "local" if "/clusters/" in path else "fuzz-job"
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("spec"), dict):
        body["spec"]["cluster"] = "local"
        body["spec"].pop("experiment", None)
        body.pop("experiment", None)
