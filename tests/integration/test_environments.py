"""Job environments through a real server: built with uv on the node from the test's own wheelhouse (no index:
machines here reach only package registries), cached, and never half-built."""

from __future__ import annotations

import base64
import hashlib
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ServerHandle

PACKAGE = "corraltestpkg"


def make_wheel(folder: Path, version: str) -> Path:
    """A pure-Python wheel of ``corraltestpkg`` at ``version`` (its module prints the version it is)."""
    files = {
        f"{PACKAGE}/__init__.py": f'__version__ = "{version}"\n',
        f"{PACKAGE}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {version}\n",
        f"{PACKAGE}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: corral-test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = f"{PACKAGE}-{version}.dist-info/RECORD"
    lines = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(text.encode())}")
    files[record] = "\n".join([*lines, f"{record},,"]) + "\n"
    wheel = folder / f"{PACKAGE}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as out:
        for name, text in files.items():
            out.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    folder.chmod(0o755)
    for version in ("1.0", "2.0"):
        make_wheel(folder, version)
    return folder


def environment(wheelhouse: Path, *packages: str) -> dict[str, object]:
    return {"packages": list(packages), "find_links": [str(wheelhouse)], "no_index": True}


def prints_version() -> dict[str, str]:
    """The package's version and the environment's prefix; corral.runtime importable in it, the server's packages
    (fastapi) not."""
    code = (
        f"import {PACKAGE}, sys, corral.runtime, importlib.util as u; "
        f"print({PACKAGE}.__version__, sys.prefix, u.find_spec('fastapi'))"
    )
    return {"command": f'python3 -c "{code}"'}


def prepared(c, name: str) -> str:  # type: ignore[no-untyped-def]
    """What building the job's environment on node 0 said (its own log: ``--stream environment``)."""
    return c.job_logs(name, stream="environment")


def test_two_jobs_at_once_each_see_their_version_and_a_second_reuses_the_first(
    server: ServerHandle, wheelhouse: Path
) -> None:
    c = server.client(experiment=f"env-{uuid.uuid4().hex[:6]}")
    one = c.create_job({"cluster": "local", "environment": environment(wheelhouse, f"{PACKAGE}==1.0"),
                        "custom": prints_version()})  # fmt: skip
    two = c.create_job({"cluster": "local", "environment": environment(wheelhouse, f"{PACKAGE}==2.0"),
                        "custom": prints_version()})  # fmt: skip
    for job, version in ((one, "1.0"), (two, "2.0")):
        ended = c.wait_job(job.name, timeout=180)
        assert ended.state == "succeeded", (ended.error, prepared(c, job.name))
        out = c.job_logs(job.name).split()
        assert out[0] == version and "/.corral/env" in out[1] and out[2] == "None", out  # its own, not the server's
        assert "built in" in prepared(c, job.name)
    again = c.wait_job(c.create_job({"cluster": "local", "environment": environment(wheelhouse, f"{PACKAGE}==1.0"),
                                     "custom": prints_version()}).name, timeout=120)  # fmt: skip
    assert again.state == "succeeded" and c.job_logs(again.name).split()[0] == "1.0"
    built, cached = prepared(c, one.name), prepared(c, again.name)
    assert "cached (linked by the shell)" in cached, cached  # found without starting Python
    print(f"\nenvironment: {built.strip().splitlines()[-1]} / second job: {cached.strip().splitlines()[-1]}")


def test_a_requirement_that_cannot_be_resolved_fails_with_uvs_message(server: ServerHandle, wheelhouse: Path) -> None:
    c = server.client(experiment="env-fail")
    job = c.create_job({"cluster": "local", "environment": environment(wheelhouse, f"{PACKAGE}==3.0"),
                        "custom": {"command": "true"}, "retry": {"max_attempts": 1}})  # fmt: skip
    ended = c.wait_job(job.name, timeout=120)
    assert ended.state == "failed" and ended.error is not None
    assert ended.error.code == "EnvironmentFailed", ended.error
    assert "the environment could not be built on node 0" in ended.error.message
    assert PACKAGE in ended.error.message and "3.0" in ended.error.message, ended.error.message  # uv's words


def test_a_build_killed_halfway_is_not_reused(server: ServerHandle, wheelhouse: Path) -> None:
    c = server.client(experiment="env-killed")
    wanted = environment(wheelhouse, f"{PACKAGE}==2.0; python_version >= '3'")  # an environment of its own
    spec = {"cluster": "local", "environment": wanted, "custom": prints_version()}
    first = c.wait_job(c.create_job(spec).name, timeout=120)
    assert first.state == "succeeded", (first.error, prepared(c, first.name))
    uid = c.get_job(first.name).uid
    built = next(server.home.glob(f"nodes/*/*/*/jobs/{uid}/.corral/env")).resolve()  # the job's link to it
    # What a build killed halfway leaves: the environment's folder without its mark of completion.
    (built / ".corral-complete").unlink()
    (built / "half-written").write_text("x")
    again = c.wait_job(c.create_job(spec).name, timeout=120)
    assert again.state == "succeeded" and "built in" in prepared(c, again.name), prepared(c, again.name)
    assert not (built / "half-written").exists() and (built / ".corral-complete").exists()


def test_an_environment_spec_is_checked_at_submission(server: ServerHandle) -> None:
    from corral.core.errors import InvalidSpec

    c = server.client()
    with pytest.raises(InvalidSpec, match=r"environment\.packages\.0"):
        c.create_job({"cluster": "local", "custom": {"command": "true"}, "environment": {"packages": ["-e ."]}})
    with pytest.raises(InvalidSpec, match=r"environment\.python"):
        c.create_job({"cluster": "local", "custom": {"command": "true"}, "environment": {"python": "three"}})


def test_without_an_environment_a_job_has_the_machines_python_and_corral_runtime_only(server: ServerHandle) -> None:
    """The server's packages do not leak into jobs (fastapi is the server's); corral.runtime is still importable;
    ``environment: server`` puts the server's back."""
    c = server.client(experiment="env-default")
    code = "import corral.runtime, importlib.util as u; print(u.find_spec('fastapi') is not None)"
    bare = c.wait_job(c.create_job({"cluster": "local", "custom": {"command": f'python3 -c "{code}"'}}).name)
    assert bare.state == "succeeded", c.job_logs(bare.name, stream="stderr")
    assert c.job_logs(bare.name) == "False\n"
    spec = {"cluster": "local", "environment": "server", "custom": {"command": f'python3 -c "{code}"'}}
    served = c.wait_job(c.create_job(spec).name)
    assert served.state == "succeeded" and c.job_logs(served.name) == "True\n", c.job_logs(served.name, stream="stderr")


def test_requirements_from_the_code_a_python_version_and_variables(
    server: ServerHandle, wheelhouse: Path, tmp_path: Path
) -> None:
    import sys

    code = tmp_path / "project"
    code.mkdir()
    (code / "requirements.txt").write_text(f"{PACKAGE}==2.0\n")
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"  # one this machine has
    spec = {
        "cluster": "local", "code": str(code),
        "environment": {"python": wanted, "requirements": "requirements.txt", "find_links": [str(wheelhouse)],
                        "no_index": True, "env_vars": {"MODE": "from-environment"}},
        "custom": {"command": f"python3 -c 'import {PACKAGE}, sys; print({PACKAGE}.__version__, sys.version_info[:2])'"
                              " && echo $MODE"},
    }  # fmt: skip
    c = server.client(experiment="env-reqs")
    job = c.wait_job(c.create_job(spec).name, timeout=120)
    assert job.state == "succeeded", (job.error, prepared(c, job.name))
    first, mode = c.job_logs(job.name).splitlines()
    version, interpreter = first.split(" ", 1)
    assert version == "2.0" and interpreter == str(sys.version_info[:2]) and mode == "from-environment"
    missing = c.wait_job(c.create_job({**spec, "environment": {"python": "2.7"}, "retry": {"max_attempts": 1}}).name)
    assert missing.error is not None and missing.error.code == "EnvironmentFailed"
    assert "no Python 2.7 on this node" in missing.error.message, missing.error.message


def test_two_jobs_needing_one_new_environment_at_once_build_it_once(server: ServerHandle, wheelhouse: Path) -> None:
    c = server.client(experiment="env-once")
    wanted = environment(wheelhouse, f"{PACKAGE}==1.0; python_version >= '3.1'")  # an environment of its own
    names = [c.create_job({"cluster": "local", "environment": wanted, "custom": prints_version()}).name for _ in "ab"]
    for name in names:
        assert c.wait_job(name, timeout=120).state == "succeeded", prepared(c, name)
    logs = [prepared(c, name) for name in names]
    assert sum("built in" in log for log in logs) == 1, logs  # the other waited for it, then found it
    assert sum("cached" in log for log in logs) == 1, logs


def test_show_says_which_step_a_running_job_is_in(server: ServerHandle, wheelhouse: Path, tmp_path: Path) -> None:
    """``environment`` while its environment is being built (the wheelhouse, served over HTTP here, answers only
    when the test lets it), ``preparing`` in the job's own prepare, ``running`` once its processes started."""
    import functools
    import http.server
    import threading
    import time

    let_through = threading.Event()

    class Stalling(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            let_through.wait(60)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    served = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Stalling, directory=str(wheelhouse)))
    threading.Thread(target=served.serve_forever, daemon=True).start()
    prepare_go, run_go = tmp_path / "prepare-go", tmp_path / "run-go"
    wanted = {"packages": [f"{PACKAGE}==1.0; python_version >= '3.2'"], "no_index": True,
              "find_links": [f"http://127.0.0.1:{served.server_address[1]}/"]}  # fmt: skip
    c = server.client(experiment="env-step")
    job = c.create_job({"cluster": "local", "environment": wanted,
                        "prepare": {"command": f"while [ ! -e {prepare_go} ]; do sleep 0.05; done"},
                        "custom": {"command": f"while [ ! -e {run_go} ]; do sleep 0.05; done"}})  # fmt: skip

    def step_becomes(wanted: str) -> None:
        seen = []
        for _ in range(600):
            shown = c.get_job(job.name)
            seen.append(shown.step)
            if shown.step == wanted:
                return
            assert shown.state in ("queued", "running"), (shown.state, shown.error, seen)
            time.sleep(0.1)
        raise AssertionError(f"never {wanted}: {seen[-5:]}")

    try:
        step_becomes("environment")
        time.sleep(0.5)
        assert c.get_job(job.name).step == "environment"  # still: the wheelhouse has not answered
        let_through.set()
        step_becomes("preparing")
        prepare_go.touch()
        step_becomes("running")
        run_go.touch()
        assert c.wait_job(job.name, timeout=60).state == "succeeded"
        assert c.get_job(job.name).step is None  # only a running job is at a step
    finally:
        let_through.set()
        prepare_go.touch()
        run_go.touch()
        served.shutdown()
