"""Every CLI command, run as a user runs it: the ``corral`` executable against a real server."""

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
from tests.data_stores import S3Server

CORRAL = str(Path(sys.executable).parent / "corral")


class Cli:
    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(home),
            "CORRAL_SERVER": f"http://127.0.0.1:{port}",
            "COLUMNS": "200",
            "CORRAL_CONFIG": str(home / "client-config.yaml"),
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
    port = free_port()
    runner = Cli(home, port)
    runner("server", "start", "--background", "--home", str(home), "--port", str(port))
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


def test_server_autostart_at_the_default_address_only(cli: Cli, tmp_path: Path) -> None:
    """With nothing at the default address, the first command starts a server there; never at another one. In a
    network namespace of its own, where 127.0.0.1:8765 is this test's alone."""
    env = {k: v for k, v in cli.env.items() if k != "CORRAL_SERVER"}
    env["CORRAL_HOME"] = str(tmp_path / "home")
    script = f"ip link set lo up && {CORRAL} cluster list && {CORRAL} server status; {CORRAL} server stop"
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "started a Corral server at http://127.0.0.1:8765" in result.stderr
    assert "running at http://127.0.0.1:8765" in result.stdout and "stopped the server" in result.stdout
    elsewhere = dict(env, CORRAL_SERVER=f"http://127.0.0.1:{free_port()}", CORRAL_HOME=str(tmp_path / "other"))
    refused = subprocess.run([CORRAL, "job", "list"], env=elsewhere, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "(from CORRAL_SERVER); start one with `corral server start" in refused.stderr
    assert not (tmp_path / "other").exists()  # nothing started


def test_server_status_and_a_second_start(cli: Cli, specs: Path) -> None:
    first = cli("cluster", "create", "-f", str(specs / "cluster.yaml"))
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
    whole_saved = cli("job", "download", "hello", str(whole), "--output", "OUT")  # all of it, found without -e
    assert whole_saved.stderr == "downloading OUT: 3 B\n"  # no terminal: one line instead of a bar
    assert (whole / "d" / "answer.txt").read_text() == "42\n"
    cli("job", "download", "hello", str(tmp_path / "dir"), "--output", "OUT", "--path", "d")
    assert (tmp_path / "dir" / "answer.txt").read_text() == "42\n"
    logs = cli("job", "download", "hello", str(tmp_path / "logs"), "--output", "stdouterr").stdout
    assert "stdout-1.txt" in logs and (tmp_path / "logs" / "attempt-1" / "stdout-1.txt").exists()
    assert json.loads(cli("job", "files", "hello", "--output", "OUT", "-o", "json").stdout)[0]["path"] == "d"
    assert "running" in cli("job", "events", "hello", "-e", "tour").stdout
    unasked = cli("job", "delete", "hello", ok=False)  # no terminal to ask on: refused, the job stays
    assert unasked.returncode == 1 and "Delete job 'hello' (succeeded, experiment tour)" in unasked.stderr
    assert "add --yes" in unasked.stderr and cli("job", "show", "hello", "-e", "tour").returncode == 0
    cli("job", "delete", "hello", "-e", "tour", "--yes")
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
    # "ran on" when the job ended before the follow saw it running (a one-line job can)
    assert re.search(r"(running|ran) on node-0, node-1 \(attempt 1\)", followed.stderr)
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


def test_profiles(cli: Cli, tmp_path: Path) -> None:
    """A profile holds server, token, workspace and experiment; `config use` switches; env and options outrank it."""
    env = {k: v for k, v in cli.env.items() if k not in ("CORRAL_SERVER", "CORRAL_HOME")}
    env["CORRAL_CONFIG"] = str(tmp_path / "config.yaml")
    env["CORRAL_HOME"] = str(tmp_path / "elsewhere")  # no token file there: the profile's is the one

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True, timeout=60)

    token = (cli.home / "token").read_text().strip()
    made = corral("config", "set", "lab", "--server", cli.env["CORRAL_SERVER"], "--token", token, "-e", "prof-exp")
    assert made.returncode == 0 and "(current)" in made.stdout
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o600
    assert json.loads(corral("whoami", "-o", "json").stdout)["admin"] is True
    shown = corral("config", "show").stdout
    assert re.search(r"experiment\s+prof-exp\s+profile lab", shown) and re.search(r"token\s+set\s+profile lab", shown)
    assert corral("experiment", "create", "prof-exp").returncode == 0
    assert "prof-exp" in corral("experiment", "list").stdout
    bad = corral("config", "set", "away", "--server", "gpu-box:8765")
    assert bad.returncode == 1 and "--server: must be an http:// or https:// URL" in bad.stderr
    assert corral("config", "set", "away", "--server", "http://127.0.0.1:1").returncode == 0
    assert "lab" in corral("config", "show").stdout  # making a second profile did not switch
    assert corral("config", "use", "away").returncode == 0
    listed = corral("config", "list").stdout
    assert re.search(r"\*\s+away", listed) and token not in listed  # a token is never printed
    unreachable = corral("job", "list")
    assert (
        unreachable.returncode == 1
        and "nothing answers at http://127.0.0.1:1 (from profile away)" in unreachable.stderr
    )
    assert corral("--profile", "lab", "whoami").returncode == 0
    missing = corral("--profile", "nope", "whoami")
    assert missing.returncode == 1 and "profile 'nope' is not in" in missing.stderr and "away, lab" in missing.stderr
    assert corral("config", "delete", "away").returncode == 0 and "away" not in corral("config", "list").stdout


def test_shell_completion_offers_names_from_the_server(cli: Cli) -> None:
    def complete(words: str) -> list[str]:
        env = {**cli.env, "_CORRAL_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split(" ")) - 1)}  # fmt: skip
        return subprocess.run([CORRAL], env=env, capture_output=True, text=True, timeout=60).stdout.split()

    assert complete("corral job sh") == ["show"]
    assert complete("corral cluster show t") == ["two"]
    cli("job", "create", "-f", cli_spec(cli, "cmp-a"), "--name", "compl-one")
    assert complete("corral job logs compl") == ["compl-one"]
    assert complete("corral job logs zz") == []
    down = {**cli.env, "CORRAL_SERVER": "http://127.0.0.1:1", "_CORRAL_COMPLETE": "complete_bash",
            "COMP_WORDS": "corral job show ", "COMP_CWORD": "3"}  # fmt: skip
    offline = subprocess.run([CORRAL], env=down, capture_output=True, text=True, timeout=60)
    assert (offline.returncode, offline.stdout.strip(), offline.stderr) == (0, "", "")  # nothing, and no server started


def cli_spec(cli: Cli, name: str) -> str:
    path = cli.home / f"{name}.yaml"
    path.write_text("cluster: two\ncustom: {command: 'true'}\n")
    return str(path)


def test_volume_commands(cli: Cli, tmp_path: Path, s3_server: S3Server) -> None:
    spec = s3_server.volume("data", "cli-volume", prefix="sets")
    (tmp_path / "volume.yaml").write_text(yaml.safe_dump(spec))
    assert cli("volume", "create", "-f", str(tmp_path / "volume.yaml")).stdout.strip() == "data"
    listed = cli("volume", "list").stdout
    assert "data" in listed and "s3://cli-volume/sets" in listed
    shown = cli("volume", "show", "data", "-o", "json").stdout
    assert json.loads(shown)["has_credentials"] is True and spec["credentials"]["secret_access_key"] not in shown
    (tmp_path / "up" / "deep").mkdir(parents=True)
    (tmp_path / "up" / "deep" / "x.txt").write_text("x\n")
    (tmp_path / "up" / "y.bin").write_bytes(b"\0" * 2048)
    assert "copied 2 files" in cli("volume", "cp", str(tmp_path / "up"), "vol://data/in").stdout
    ls = cli("volume", "ls", "vol://data/in").stdout
    assert "deep/" in ls and "y.bin" in ls and "2.0 KiB" in ls
    cli("volume", "cp", "vol://data/in", str(tmp_path / "down"))
    assert (tmp_path / "down" / "deep" / "x.txt").read_text() == "x\n"
    wrong = cli("volume", "cp", str(tmp_path / "up"), str(tmp_path / "elsewhere"), ok=False)
    assert wrong.returncode != 0 and "one of the two starts with vol://" in wrong.stderr
    cli("volume", "delete", "data", "--yes")
    assert "data" not in cli("volume", "list").stdout


def test_env_commands(cli: Cli, tmp_path: Path) -> None:
    from tests.integration.test_environments import make_wheel

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "1.0")
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"name": "envs", "scale": {"nodes": 1}}))
    cli("cluster", "create", "-f", str(tmp_path / "cluster.yaml"))
    environment = {"packages": ["corraltestpkg==1.0"], "find_links": [str(wheels)], "no_index": True}
    spec = {"cluster": "envs", "custom": {"command": "python3 -c 'import corraltestpkg'"}, "environment": environment}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec))
    cli("job", "create", "-f", str(tmp_path / "job.yaml"), "--wait")
    listed = json.loads(cli("env", "list", "envs", "-o", "json").stdout)
    assert len(listed) == 1 and listed[0]["packages"] == ["corraltestpkg==1.0"] and listed[0]["size"] > 0
    assert "corraltestpkg==1.0" in cli("env", "list", "envs").stdout
    assert listed[0]["hash"] in cli("env", "show", "envs", listed[0]["hash"][:8]).stdout
    assert "removed 0 environments" in cli("env", "prune", "envs", "--older-than", "1d").stdout  # used just now
    assert "removed 1 environments" in cli("env", "prune", "envs", "--older-than", "0s").stdout
    assert json.loads(cli("env", "list", "envs", "-o", "json").stdout) == []
    cli("cluster", "delete", "envs", "--yes")


def test_no_token_means_a_clear_error(cli: Cli) -> None:
    env = {**cli.env, "CORRAL_TOKEN": "wrong"}
    result = subprocess.run([CORRAL, "cluster", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "token is not valid" in result.stderr


def test_server_stop(cli: Cli) -> None:
    assert "stopped" in cli("server", "stop", "--home", str(cli.home)).stdout
    status = cli("server", "status", ok=False)
    assert status.returncode == 1 and "no Corral server answers" in status.stderr
