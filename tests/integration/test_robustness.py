"""Hostile but honest input, through a real server: every input bounded, one bad job never stops the others,
logs never cut short (issue 9). Each test names the defect it guards against."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from corral.core.errors import TooManyRequests
from corral.server.services.admission import COUNTS_MAX_AGE
from tests.conftest import ServerHandle, process_gone, until

JOBS = "/workspaces/default/experiments/default/jobs"


def api(server: ServerHandle, method: str, path: str, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.token}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, f"{server.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def submit(server: ServerHandle, spec: dict[str, object], **kwargs: object) -> httpx.Response:
    return api(server, "POST", JOBS, json={"spec": spec}, **kwargs)


def job(command: str, **more: object) -> dict[str, object]:
    return {"cluster": "local", "custom": {"command": command}, **more}


def error(response: httpx.Response) -> str:
    return str(response.json()["error"]["message"])


def test_an_output_suffix_cannot_lead_out_of_its_directory(server: ServerHandle, tmp_path: Path) -> None:
    for suffix in ("../../../../../../../..", "a/../../b", ".", "a/./b"):
        bad = submit(server, job("true", outputs=[{"id": "OUT", "path": str(tmp_path), "suffix": suffix}]))
        assert bad.status_code == 422, suffix
        assert "outputs.0.suffix" in error(bad) and "'..'" in error(bad)
    ok = submit(server, job("true", outputs=[{"id": "OUT", "path": str(tmp_path), "suffix": "a/b.c"}]))
    assert ok.status_code == 201
    name = ok.json()["name"]
    nul = api(server, "GET", f"{JOBS}/{name}/files/content", params={"output": "stdouterr", "path": "a\x00b"})
    assert nul.status_code == 400 and "NUL" in error(nul)


@pytest.mark.parametrize("where", ["experiments/%20/jobs", "experiments/..%2F../jobs", "experiments/a%00b/jobs"])
def test_every_name_in_a_url_is_validated(server: ServerHandle, where: str) -> None:
    response = api(server, "POST", f"/workspaces/default/{where}", json={"spec": job("true")})
    assert response.status_code in (404, 422)  # a path the router cannot match is a 404, never a 201
    if response.status_code == 422:
        assert response.json()["error"]["details"][0]["loc"] == "path.exp"
    for path in ("/workspaces/%20", "/workspaces/default/clusters/%20", f"{JOBS}/%20", f"{JOBS}/x/logs?rank=-1"):
        assert api(server, "GET", path).status_code == 422, path


def test_following_a_big_log_delivers_every_byte(server: ServerHandle) -> None:
    """It used to stop one 1 MiB read after the end: the rest of a fast writer's output was lost."""
    lines = 200_000  # ~3.7 MB, written faster than one read takes
    program = f"python3 -c 'import sys; sys.stdout.writelines(f\"line {{i:09d}}\\n\" for i in range({lines}))'"
    name = submit(server, job(program)).json()["name"]
    c = server.client()
    live = [line for stream, line in c.follow_logs(name) if stream == "stdout"]
    assert len(live) == lines and live[-1] == f"line {lines - 1:09d}"
    after = [line for stream, line in c.follow_logs(name) if stream == "stdout"]
    assert after == live
    text = c.job_logs(name)
    assert text.count("\n") == lines and text.endswith(f"line {lines - 1:09d}\n")
    assert c.job_logs(name, tail=2) == f"line {lines - 2:09d}\nline {lines - 1:09d}\n"
    assert c.job_logs(name, tail=0) == ""
    first = api(server, "GET", f"{JOBS}/{name}/logs", params={"tail": 1})
    size = int(first.headers["x-log-size"])
    assert size == len(text) and api(server, "GET", f"{JOBS}/{name}/logs", params={"offset": size}).text == ""
    assert api(server, "GET", f"{JOBS}/{name}/logs", params={"offset": size - 5}).text == "9999\n"


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_200_mb_log_arrives_whole_live_and_after_the_end_in_bounded_memory(server: ServerHandle) -> None:
    lines = 10_000_000  # 20 bytes each: 200 MB
    program = f"python3 -c 'import sys; w = sys.stdout.write\nfor i in range({lines}): w(f\"{{i:019d}}\\n\")'"
    assert server.process is not None
    before = _peak_rss(server.process.pid)
    name = submit(server, job(program)).json()["name"]
    c = server.client()

    def check(events: object) -> None:
        count = 0
        for stream, line in events:  # type: ignore[attr-defined]
            if stream == "stdout":
                assert line == f"{count:019d}"
                count += 1
        assert count == lines

    check(c.follow_logs(name))  # live
    check(c.follow_logs(name))  # after the end
    size = 0
    expected = 0
    carry = b""
    for chunk in c.stream_logs(name):
        size += len(chunk)
        data = carry + chunk
        *whole, carry = data.split(b"\n")
        for line in whole:
            assert int(line) == expected
            expected += 1
    assert size == 20 * lines and expected == lines and carry == b""
    grown = _peak_rss(server.process.pid) - before
    assert grown < 100 * 1024 * 1024, f"the server grew by {grown} bytes serving a 200 MB log"


def test_logs_of_a_job_with_secrets_are_masked_across_chunks(server: ServerHandle) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    program = "python3 -c 'import os; [print(i, os.environ[\"KEY\"]) for i in range(150000)]'"
    name = submit(server, job(program, secrets={"KEY": secret})).json()["name"]
    c = server.client()
    c.wait_job(name, timeout=60)
    text = c.job_logs(name)
    assert text.count("\n") == 150_000 and secret not in text and text.endswith("149999 ***\n")
    content = api(
        server, "GET", f"{JOBS}/{name}/files/content", params={"output": "stdouterr", "path": "attempt-1/stdout-0.txt"}
    )
    assert content.status_code == 200 and secret not in content.text and content.text == text


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/workspaces/default/clusters", {"name": "huge", "scale": {"nodes": 10**10}}, "scale.nodes"),
        ("POST", "/workspaces/default/clusters", {"name": "huge", "scale": {"max_nodes": 10**10}}, "scale.max_nodes"),
        ("POST", "/workspaces/default/clusters/local/resize", {"nodes": 10**10}, "nodes"),
        ("POST", "/workspaces/default/clusters/local/autoscale", {"max_nodes": 10**10}, "max_nodes"),
    ],
)
def test_cluster_sizes_are_bounded(server: ServerHandle, method: str, path: str, body: object, field: str) -> None:
    response = api(server, method, path, json=body)
    assert response.status_code == 422
    assert "max_nodes_per_cluster" in error(response) and field in error(response)
    assert api(server, "GET", "/workspaces/default/clusters/local").json()["target_nodes"] == 4


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"spec": {"cluster": "local", "custom": {"command": "true"}, "limits": {"termination_grace": Infinity}}}',
         "limits.termination_grace"),
        ('{"spec": {"cluster": "local", "custom": {"command": "true"}, "limits": {"max_wall_clock": 1e309}}}',
         "limits.max_wall_clock"),
        ('{"spec": {"cluster": "local", "custom": {"command": "true"}, "limits": {"max_wall_clock": NaN}}}',
         "limits.max_wall_clock"),
        ('{"spec": {"cluster": "local", "custom": {"command": "true"}, "node_count": true}}', "node_count"),
    ],
)  # fmt: skip
def test_numbers_are_finite_and_not_booleans(server: ServerHandle, raw: str, field: str) -> None:
    response = api(server, "POST", JOBS, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and field in error(response)


def test_booleans_and_huge_limits_are_refused(server: ServerHandle) -> None:
    resize = api(server, "POST", "/workspaces/default/clusters/local/resize", json={"nodes": False})
    assert resize.status_code == 422 and "boolean" in error(resize)
    assert api(server, "GET", JOBS, params={"limit": 2**70}).status_code == 422
    assert api(server, "GET", JOBS, params={"limit": 10_000}).status_code == 200
    # Found by the fuzz run: past a 32-bit column, PostgreSQL refused the write and the API answered 500.
    quota = api(server, "PUT", "/workspaces/default/quota", json={"max_nodes": 1336921642461409})
    assert quota.status_code == 422 and "max_nodes" in error(quota)
    assert api(server, "PUT", "/workspaces/default/quota", json={"max_gpus": True}).status_code == 422


def test_what_no_process_could_start_with_is_refused_at_submission(server: ServerHandle) -> None:
    big_env = {f"V{i}": "x" * 100 for i in range(100_000)}
    cases = [
        (job("true", env={"BIG": "x" * 10_000_000}), "env.BIG"),
        (job("true", env=big_env), "max_env_bytes"),
        (job("x" * 1_000_000), "custom.command"),
        (job("true", env={"A": "a\x00b"}), "NUL"),
        (job("echo a\x00b"), "NUL"),
    ]
    for spec, expected in cases:
        response = submit(server, spec)
        assert response.status_code == 422 and expected in error(response), expected
    assert submit(server, job("true", env={"OK": "x" * 100_000})).status_code == 201


def _tar_gz(members: int, size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    return buffer.getvalue()


def test_code_uploads_are_bounded_before_and_after_unpacking(server_factory: object) -> None:
    srv: ServerHandle = server_factory(  # type: ignore[operator]
        settings={"CORRAL_MAX_CODE_BYTES": str(1 << 20), "CORRAL_MAX_CODE_UNPACKED_BYTES": str(8 << 20),
                  "CORRAL_MAX_CODE_MEMBERS": "50"}
    )  # fmt: skip
    declared = api(srv, "PUT", f"/workspaces/default/code/{'0' * 64}", content=b"x" * (2 << 20))
    assert declared.status_code == 413 and "max_code_bytes" in error(declared)

    def chunks() -> object:  # no Content-Length: refused once the bytes pass the limit
        for _ in range(64):
            yield b"x" * 65536

    streamed = api(srv, "PUT", f"/workspaces/default/code/{'0' * 64}", content=chunks())
    assert streamed.status_code == 413
    bomb = _tar_gz(1, 64 << 20)  # 64 MiB of zeros, ~64 KiB gzipped
    assert len(bomb) < 1 << 20
    sha = hashlib.sha256(bomb).hexdigest()
    refused = api(srv, "PUT", f"/workspaces/default/code/{sha}", content=bomb)
    assert refused.status_code == 413 and "max_code_unpacked_bytes" in error(refused)
    many = _tar_gz(51, 0)
    refused = api(srv, "PUT", f"/workspaces/default/code/{hashlib.sha256(many).hexdigest()}", content=many)
    assert refused.status_code == 413 and "max_code_members" in error(refused)
    fine = _tar_gz(3, 1000)
    sha = hashlib.sha256(fine).hexdigest()
    assert api(srv, "PUT", f"/workspaces/default/code/{sha}", content=fine).status_code == 204
    assert api(srv, "GET", f"/workspaces/default/code/{sha}").status_code == 204
    assert sorted(p.name for p in (srv.home / "code").iterdir()) == [f"{sha}.tar.gz"]
    assert gzip.decompress((srv.home / "code" / f"{sha}.tar.gz").read_bytes())


def test_per_user_submission_limits_answer_429(server_factory: object) -> None:
    srv: ServerHandle = server_factory(  # type: ignore[operator]
        settings={"CORRAL_SUBMIT_RATE": "0.5", "CORRAL_SUBMIT_BURST": "3", "CORRAL_MAX_QUEUED_JOBS_PER_USER": "0"}
    )
    api(srv, "POST", "/workspaces/default/clusters", json={"name": "local", "scale": {"nodes": 1}})
    codes = [submit(srv, job("true")).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    limited = submit(srv, job("true"))
    assert limited.status_code == 429 and "submit_rate" in error(limited)
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    with pytest.raises(TooManyRequests, match="submit_rate"):  # the SDK raises the error the server sent
        srv.client(retries_when_limited=0).create_job(job("true"))
    waited = srv.client().create_job(job("true"))  # by default it waits as told and sends it again
    assert waited.state == "queued"
    bob = api(srv, "POST", "/users", json={"name": "bob"}).json()["token"]
    api(srv, "PUT", "/workspaces/default/members/bob", json={"role": "contributor"})
    other = submit(srv, job("true"), headers={"Authorization": f"Bearer {bob}"})
    assert other.status_code == 201  # one user's limit is not another's


def test_queued_jobs_per_user_are_bounded(server_factory: object) -> None:
    srv: ServerHandle = server_factory(settings={"CORRAL_MAX_QUEUED_JOBS_PER_USER": "2"})  # type: ignore[operator]
    api(srv, "POST", "/workspaces/default/clusters", json={"name": "local", "scale": {"nodes": 1}})
    assert submit(srv, job("sleep 60")).status_code == 201
    until(lambda: api(srv, "GET", JOBS).json()[0]["state"] == "running")
    time.sleep(COUNTS_MAX_AGE)  # the counts are a second old at most: the running job no longer counts
    codes = [submit(srv, job("true")).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    assert "max_queued_jobs_per_user" in error(submit(srv, job("true")))


def test_a_jobs_setsid_children_end_with_it(server: ServerHandle, tmp_path: Path) -> None:
    out = tmp_path / "pids"
    command = f"for i in 1 2 3; do setsid sleep 300 & echo $! >> {out}; done; wait_for=0"
    c = server.client()
    name = submit(server, job(command)).json()["name"]
    assert c.wait_job(name, timeout=30).state == "succeeded"
    pids = [int(p) for p in out.read_text().split()]
    assert len(pids) == 3
    until(lambda: all(process_gone(p) for p in pids), timeout=15)


def test_the_openapi_schema_documents_errors_and_content_types(server: ServerHandle) -> None:
    schema = httpx.get(f"{server.url}/api/v1/openapi.json", headers={"Authorization": f"Bearer {server.token}"}).json()
    create = schema["paths"]["/api/v1/workspaces/{ws}/experiments/{exp}/jobs"]["post"]
    for status in ("400", "401", "404", "409", "413", "422", "429"):
        assert create["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    assert "Retry-After" in create["responses"]["429"]["headers"]
    logs = schema["paths"]["/api/v1/workspaces/{ws}/experiments/{exp}/jobs/{name}/logs"]["get"]["responses"]
    assert {"text/plain", "text/event-stream"} <= set(logs["200"]["content"])
    spec = schema["components"]["schemas"]["JobCreate"]["properties"]["spec"]
    assert spec["allOf"] == [{"$ref": "#/components/schemas/JobSpec"}]
    assert json.dumps(schema["components"]["schemas"]["JobSpec"]).count('"required": ["custom"]') == 1
