"""A bounded fuzz run: Schemathesis against the OpenAPI schema of a real server, with a token.

Every route but ``node exec`` (it runs what it is given), in its examples, coverage and fuzzing phases, with a
fixed seed. It must end with no server error and no response that breaks the schema (status codes, content
types, headers, bodies); the hooks (``tests/fuzz/hooks.py``) point half the requests at what exists, so
generated specs reach the queue and the control loop, which the test checks too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerHandle

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def test_fuzz_the_api_finds_no_server_error_and_no_schema_violation(server: ServerHandle) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}
    jobs = f"{server.url}/api/v1/workspaces/default/experiments/default/jobs"
    spec = {"name": "fuzz-job", "cluster": "local", "custom": {"command": "echo fuzz"}}
    assert httpx.post(jobs, headers=headers, json={"spec": spec}).status_code == 201
    users = f"{server.url}/api/v1/users"
    assert httpx.post(users, headers=headers, json={"name": "fuzz-user"}).status_code == 201
    schemathesis = Path(sys.executable).with_name("schemathesis")
    # fmt: off
    argv = [
        str(schemathesis), "run", f"{server.url}/api/v1/openapi.json",
        "-H", f"Authorization: Bearer {server.token}",
        # Not fuzzed: node exec (it runs commands), and volumes (a random one would make the server connect to
        # any address, or, as an admin's path volume, write anywhere on this machine).
        "--exclude-path-regex", "/exec$|/volumes",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "-n", "40", "--seed", "1", "-w", "1", "--no-color",
        "--generation-database", "none",
    ]
    # fmt: on
    run = subprocess.run(
        argv,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = run.stdout + run.stderr
    failures = report.split("FAILURES")[-1].split("WARNINGS")[0] if "FAILURES" in report else report[-3000:]
    assert run.returncode == 0, "\n".join(line[:300] for line in failures.splitlines())
    assert " passed" in report and "failures" not in report.split("SUMMARY")[-1], report[-3000:]
    # The fuzzer's own specs reached the control loop: more jobs than ours, and they ended.
    listed = httpx.get(jobs, headers=headers, params={"limit": 10000}).json()
    assert len(listed) > 1
    assert any(job["name"] != "fuzz-job" and job["state"] in ("succeeded", "failed") for job in listed)
    log = (server.home / "server.log").read_text()
    assert "control loop pass failed" not in log and "Traceback" not in log
