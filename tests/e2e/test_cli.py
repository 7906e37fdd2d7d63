"""Every CLI command, run as a user runs it: the ``corral`` executable against a real server.

The first command finds no server and starts one in the background itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

CORRAL = str(Path(sys.executable).parent / "corral")


class Cli:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(home),
            "CORRAL_SERVER": f"http://127.0.0.1:{port}",
            "COLUMNS": "200",
        }
        self.env.pop("CORRAL_DATABASE_URL", None)
        self.env.pop("CORRAL_TOKEN", None)

    def __call__(self, *args: str, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CORRAL, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        if ok:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    home = tmp_path_factory.mktemp("clihome")
    runner = Cli(home, free_port())
    yield runner
    runner("server", "stop", "--home", str(home), ok=False)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("specs")
    (d / "cluster.yaml").write_text("name: two\nnode: {cpus: 1}\nscale: {nodes: 2}\n")
    (d / "ok.yaml").write_text(
        "name: hello\ncluster: two\nnode_count: 2\n"
        "custom: {command: 'echo hello from $CORRAL_NODE_RANK; echo warn >&2; mkdir -p $CORRAL_OUTPUT_OUT/d;"
        " echo 42 > $CORRAL_OUTPUT_OUT/d/answer.txt'}\n"
        "outputs: [{id: OUT, path: out}]\n"
    )
    (d / "fail.yaml").write_text("cluster: two\ncustom: {command: 'exit 3'}\n")
    (d / "long.yaml").write_text("cluster: two\ncustom: {command: 'sleep 300'}\nlimits: {termination_grace: 2s}\n")
    (d / "bad.yaml").write_text("cluster: two\nnode_count: 0\ncustom: {command: 'true'}\n")
    return d


def test_server_autostart_and_status(cli: Cli, specs: Path) -> None:
    first = cli("cluster", "create", "-f", str(specs / "cluster.yaml"))
    assert "started a Corral server" in first.stderr
    assert first.stdout.strip() == "two"
    assert "running at" in cli("server", "status").stdout
    again = cli(
        "server",
        "start",
        "--background",
        "--home",
        str(cli.home),
        "--port",
        cli.env["CORRAL_SERVER"].rsplit(":", 1)[1],
        ok=False,
    )
    assert again.returncode != 0 and "already runs at" in again.stderr


def test_cluster_commands(cli: Cli, specs: Path) -> None:
    assert "two" in cli("cluster", "list").stdout
    shown = json.loads(cli("cluster", "show", "two", "-o", "json").stdout)
    assert shown["current_nodes"] == 2 and shown["node_counts"]["idle"] >= 0
    nodes = json.loads(cli("cluster", "node", "list", "two", "-o", "json").stdout)
    assert [n["name"] for n in nodes] == ["node-0", "node-1"]
    assert "node-1" in cli("cluster", "node", "list", "two").stdout
    dup = cli("cluster", "create", "-f", str(specs / "cluster.yaml"), ok=False)
    assert dup.returncode == 1 and dup.stderr.startswith("error: cluster 'two' already exists")
    assert "Traceback" not in dup.stderr


def test_experiment_commands(cli: Cli) -> None:
    assert cli("experiment", "create", "cli-exp").stdout.strip() == "cli-exp"
    assert "cli-exp" in cli("experiment", "list").stdout
    listed = json.loads(cli("experiment", "list", "-o", "json").stdout)
    assert {e["name"] for e in listed} >= {"default", "cli-exp"}
    unasked = cli("experiment", "delete", "cli-exp", ok=False)  # no terminal to ask on: refused, nothing lost
    assert unasked.returncode == 1 and "add --yes" in unasked.stderr
    assert "cli-exp" in cli("experiment", "list").stdout
    cli("experiment", "delete", "cli-exp", "--yes")
    assert "cli-exp" not in cli("experiment", "list").stdout


def test_finding_things(cli: Cli, specs: Path) -> None:
    """A job named alone is found in its experiment; CORRAL_EXPERIMENT counts; wait says 4 when there is none."""
    assert cli("--version").stdout.startswith("corral ")
    me = json.loads(cli("whoami", "-o", "json").stdout)
    assert me["name"] == "admin" and me["admin"] is True
    name = cli("job", "create", "-f", str(specs / "fail.yaml"), "-e", "found").stdout.strip()
    assert cli("job", "wait", name, ok=False).returncode == 3  # its own exit code, found without -e
    assert json.loads(cli("job", "show", name, "-o", "json").stdout)["experiment"] == "found"
    assert cli("job", "wait", "no-such-job", ok=False).returncode == 4
    listed = cli("job", "list", "--all").stdout
    assert name in listed and "found" in listed
    assert name not in cli("job", "list").stdout  # the default experiment's
    cli.env["CORRAL_EXPERIMENT"] = "found"
    try:
        assert name in cli("job", "list").stdout
    finally:
        del cli.env["CORRAL_EXPERIMENT"]
    rows = json.loads(cli("job", "list", "-e", "found", "-o", "json").stdout)
    assert len(rows[0]["attempts"]) == 1 and len(rows[0]["attempts"][0]["nodes"]) == 1  # as show has them
    nodes = cli("cluster", "node", "list", "two").stdout
    assert "CPUS" in nodes and "MEMORY" in nodes
    as_yaml = yaml.safe_load(cli("job", "show", name, "-o", "yaml").stdout)
    assert as_yaml["name"] == name and as_yaml["experiment"] == "found"
    spare = specs / "spare.yaml"
    spare.write_text("name: spare\nscale: {nodes: 1}\n")
    cli("cluster", "create", "-f", str(spare))
    unasked = cli("cluster", "delete", "spare", ok=False)
    assert unasked.returncode == 1 and "add --yes" in unasked.stderr
    cli("cluster", "delete", "spare", "--yes")
    assert "spare" not in cli("cluster", "list").stdout
    assert cli("cluster", "node", "logs", "two", "0").returncode == 0  # a node by its index


def test_validate_dry_run_and_env(cli: Cli, specs: Path) -> None:
    checked = cli("job", "validate", "-f", str(specs / "ok.yaml"), "-e", "checks")
    assert checked.stdout.startswith("valid: job hello (custom, 2 nodes, 2 ranks) would queue on cluster two")
    bad = cli("job", "create", "-f", str(specs / "bad.yaml"), "--dry-run", ok=False)
    assert bad.returncode == 1 and "node_count: must be >= 1" in bad.stderr
    assert "experiment 'checks' not found" in cli("job", "list", "-e", "checks", ok=False).stderr  # nothing stored
    (specs / "env.yaml").write_text(
        'cluster: two\ncustom: {command: \'test "$X" = "a=b"\'}\nretry: {on: [preemption]}\n'
    )
    name = cli("job", "create", "-f", str(specs / "env.yaml"), "--env", "X=a=b").stdout.strip()
    assert cli("job", "wait", name).returncode == 0
    assert cli("job", "create", "-f", str(specs / "env.yaml"), "--env", "nonsense", ok=False).returncode == 2


def test_a_mistyped_server_address_starts_nothing(cli: Cli) -> None:
    wrong = dict(cli.env, CORRAL_SERVER="http://127.0.0.1:1")
    result = subprocess.run([CORRAL, "job", "list"], env=wrong, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "nothing answers at http://127.0.0.1:1" in result.stderr and cli.env["CORRAL_SERVER"] in result.stderr


def test_job_lifecycle(cli: Cli, specs: Path, tmp_path: Path) -> None:
    created = cli("job", "create", "-f", str(specs / "ok.yaml"), "-e", "tour", "--wait")
    assert created.stdout.strip() == "hello"
    assert cli("job", "wait", "hello", "-e", "tour").returncode == 0
    logs = cli("job", "logs", "hello", "-e", "tour", "--node", "1")
    assert logs.stdout == "hello from 1\n" and logs.stderr == "warn\n"
    shown = json.loads(cli("job", "show", "hello", "-e", "tour", "-o", "json").stdout)
    assert shown["state"] == "succeeded" and shown["exit_code"] == 0
    assert "succeeded" in cli("job", "show", "hello", "-e", "tour").stdout
    assert "hello" in cli("job", "list", "-e", "tour", "--state", "succeeded").stdout
    assert json.loads(cli("job", "list", "-e", "tour", "--state", "failed", "-o", "json").stdout) == []
    files = cli("job", "files", "hello", "-e", "tour", "--output", "OUT", "--path", "d").stdout
    assert "d/answer.txt" in files
    assert "stdouterr" in cli("job", "files", "hello", "-e", "tour").stdout
    saved = cli("job", "download", "hello", str(tmp_path), "-e", "tour", "--output", "OUT", "--path", "d/answer.txt")
    assert (tmp_path / "answer.txt").read_text() == "42\n" and "answer.txt" in saved.stdout
    escape = cli(
        "job", "download", "hello", str(tmp_path), "-e", "tour", "--output", "OUT", "--path", "../../x", ok=False
    )
    assert escape.returncode == 1 and "must not contain '..'" in escape.stderr
    whole = tmp_path / "new" / "place"  # created
    cli("job", "download", "hello", str(whole), "--output", "OUT")  # all of it, found without -e
    assert (whole / "d" / "answer.txt").read_text() == "42\n"
    cli("job", "download", "hello", str(tmp_path / "dir"), "--output", "OUT", "--path", "d")
    assert (tmp_path / "dir" / "answer.txt").read_text() == "42\n"
    logs = cli("job", "download", "hello", str(tmp_path / "logs"), "--output", "stdouterr").stdout
    assert "stdout-1.txt" in logs and (tmp_path / "logs" / "attempt-1" / "stdout-1.txt").exists()
    assert json.loads(cli("job", "files", "hello", "--output", "OUT", "-o", "json").stdout)[0]["path"] == "d"
    assert "running" in cli("job", "events", "hello", "-e", "tour").stdout
    cli("job", "delete", "hello", "-e", "tour")
    assert cli("job", "show", "hello", "-e", "tour", ok=False).stderr.startswith("error: job 'hello' not found")


def test_failed_job_exit_codes(cli: Cli, specs: Path) -> None:
    created = cli("job", "create", "-f", str(specs / "fail.yaml"), "--name", "boom", "--wait", ok=False)
    assert created.returncode == 3 and "JobFailed" in created.stderr
    waited = cli("job", "wait", "boom", ok=False)
    assert waited.returncode == 3


def test_follow_and_terminate(cli: Cli, specs: Path) -> None:
    followed = cli("job", "create", "-f", str(specs / "ok.yaml"), "--name", "followed", "--follow")
    lines = followed.stdout.splitlines()
    assert lines[0] == "followed" and sorted(lines[1:]) == ["[0 node-0] hello from 0", "[1 node-1] hello from 1"]
    assert "running on node-0, node-1 (attempt 1)" in followed.stderr
    assert re.search(r"followed succeeded in \d+\.\d s", followed.stderr)
    assert "[0 node-0] warn" in followed.stderr and "[1 node-1] warn" in followed.stderr
    one = cli("job", "logs", "followed", "-f", "--rank", "1", "--stream", "stdout")
    assert one.stdout == "hello from 1\n" and "warn" not in one.stderr  # one rank, no prefix, --stream kept
    failed = cli("job", "create", "-f", str(specs / "fail.yaml"), "--name", "fails", "--follow", ok=False)
    assert failed.returncode == 3 and "fails failed" in failed.stderr
    assert cli("job", "logs", "fails", "-f", ok=False).returncode == 3  # logs -f exits with the job's code
    # The spec names its experiment: --follow finds the job there.
    (specs / "named.yaml").write_text("experiment: named\ncluster: two\ncustom: {command: 'echo in named'}\n")
    named = cli("job", "create", "-f", str(specs / "named.yaml"), "--follow")
    assert named.stdout.splitlines()[1:] == ["in named"]
    cli("job", "create", "-f", str(specs / "long.yaml"), "--name", "long")
    assert "terminat" in cli("job", "terminate", "long").stdout
    waited = cli("job", "wait", "long", ok=False)
    assert waited.returncode != 0 and "terminated" in waited.stdout
    follow_ended = cli("job", "logs", "long", "-f", ok=False)
    assert follow_ended.returncode != 0 and "long terminated" in follow_ended.stderr


def test_bad_spec_is_one_clear_line(cli: Cli, specs: Path) -> None:
    bad = cli("job", "create", "-f", str(specs / "bad.yaml"), ok=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: job: node_count: must be >= 1, got 0"
    missing = cli("job", "create", "-f", str(specs / "nope.yaml"), ok=False)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_users_quotas_usage_and_cluster_sizes(cli: Cli, specs: Path) -> None:
    token = cli("user", "create", "carol").stdout.strip()
    assert len(token) > 20 and "carol" in cli("user", "list").stdout
    as_carol = subprocess.run(
        [CORRAL, "user", "create", "dave"], env={**cli.env, "CORRAL_TOKEN": token}, capture_output=True, text=True
    )
    assert as_carol.returncode == 1 and "is not an admin" in as_carol.stderr
    cli("workspace", "create", "team")
    assert "max nodes 1" in cli("workspace", "quota", "team", "--nodes", "1").stdout
    listed = json.loads(cli("workspace", "list", "-o", "json").stdout)
    assert {"name": "team", "max_nodes": 1} in [
        {"name": w["name"], "max_nodes": w["quota"]["max_nodes"]} for w in listed
    ]
    assert "target 3" in cli("cluster", "resize", "two", "--nodes", "3").stdout
    cli("cluster", "resize", "two", "--nodes", "2")
    (specs / "auto.yaml").write_text(
        "name: auto\nscale: {min_nodes: 0, max_nodes: 2}\nsetup: {command: 'echo ready'}\n"
    )
    cli("cluster", "create", "-f", str(specs / "auto.yaml"))
    (specs / "on-auto.yaml").write_text("cluster: auto\ncustom: {command: 'echo grown'}\n")
    cli("job", "create", "-f", str(specs / "on-auto.yaml"), "--name", "on-auto", "--wait")  # from 0 nodes
    assert cli("job", "logs", "on-auto").stdout == "grown\n"
    assert cli("cluster", "node", "logs", "auto", "node-0").stdout == "ready\n"
    usage = cli("usage").stdout
    assert "USER" in usage and "EXPERIMENT" in usage and "admin" in usage
    assert "0 to 3" in cli("cluster", "autoscale", "auto", "--min", "0", "--max", "3").stdout
    exec_ = subprocess.run(
        [CORRAL, "cluster", "node", "exec", "two", "node-0", "--", "sh", "-c", "echo $CORRAL_NODE_NAME"],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (exec_.returncode, exec_.stdout) == (0, "node-0\n")


def test_no_token_means_a_clear_error(cli: Cli) -> None:
    env = {**cli.env, "CORRAL_TOKEN": "wrong"}
    result = subprocess.run([CORRAL, "cluster", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "token is not valid" in result.stderr


def test_server_stop(cli: Cli) -> None:
    assert "stopped" in cli("server", "stop", "--home", str(cli.home)).stdout
    status = cli("server", "status", ok=False)
    assert status.returncode == 1 and "no Corral server answers" in status.stderr
