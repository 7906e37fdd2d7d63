"""The SDK as a user drives it (issue 10): jobs that act on themselves, lists paged with a cursor, an asyncio
client, transfer progress, and profiles of the config file — through a real server."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import httpx
import pytest

from corral import AsyncClient, RemoteJob
from corral.client import config
from corral.client.client import Client
from corral.core.errors import CorralError, NotFound
from corral.core.models import FollowEvent
from tests.conftest import ServerHandle


@pytest.fixture
def client(server: ServerHandle) -> Client:
    return server.client(experiment=f"sdk{uuid.uuid4().hex[:8]}")


def test_a_job_acts_on_itself(client: Client, tmp_path: Path) -> None:
    spec = {
        "cluster": "local",
        "node_count": 2,
        "custom": {"command": "echo hi from $CORRAL_NODE_RANK; cd $CORRAL_OUTPUT_OUT; mkdir -p sub;"
                   " head -c 3000000 /dev/zero > sub/big.bin; echo small > a.txt"},
        "outputs": [{"id": "OUT", "path": str(tmp_path / "out")}],
    }  # fmt: skip
    job = client.create_job(spec)
    assert isinstance(job, RemoteJob)
    ended = job.wait(timeout=60)
    assert ended.state == "succeeded" and ended.name == job.name
    assert job.state == "queued"  # a RemoteJob is the record as it was read; wait() returned the new one
    assert ended.logs(rank=1) == "hi from 1\n"
    assert [e.to_state for e in ended.events()][-1] == "succeeded"
    assert {e.path for e in ended.files(output="OUT")} == {"a.txt", "sub"}
    seen: list[tuple[int, int]] = []
    saved = ended.download("OUT", tmp_path / "dl", progress=lambda done, total: seen.append((done, total)))
    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in saved) == ["a.txt", "sub/big.bin"]
    assert seen[-1] == (3_000_006, 3_000_006)  # every byte of both files counted, once
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    kinds = [e.kind for e in ended.follow()]
    assert kinds[-1] == "end"
    assert ended.refresh().state == "succeeded"
    ended.delete()
    with pytest.raises(NotFound):
        ended.refresh()
    with pytest.raises(CorralError, match="not bound to a client"):
        RemoteJob.model_validate(ended.model_dump()).wait()


def test_lists_are_paged_with_a_cursor(client: Client, server: ServerHandle) -> None:
    names = [f"page-{i}" for i in range(7)] + ["pagex", "pa_ge"]
    for name in names:
        client.create_job({"cluster": "local", "custom": {"command": "true"}}, name=name)
    assert [j.name for j in client.iter_jobs(page_size=3)] == names  # oldest first, across 3 pages
    assert [j.name for j in client.list_jobs(limit=4)] == names[:4]
    assert [j.name for j in client.list_jobs(prefix="page-")] == names[:7]
    assert [j.name for j in client.list_jobs(prefix="pa_")] == ["pa_ge"]  # _ is a character, not a wildcard
    assert [j.name for j in client.iter_jobs(prefix="pa", all_experiments=True, page_size=2)] == names
    path = f"{server.url}/api/v1/workspaces/default/experiments/{client.experiment}/jobs"
    headers = {"Authorization": f"Bearer {server.token}"}
    first = httpx.get(path, params={"limit": 8}, headers=headers)
    assert len(first.json()) == 8 and "x-next-cursor" in first.headers
    last = httpx.get(path, params={"limit": 8, "cursor": first.headers["x-next-cursor"]}, headers=headers)
    assert [j["name"] for j in last.json()] == ["pa_ge"] and "x-next-cursor" not in last.headers
    assert httpx.get(path, params={"cursor": "x'1"}, headers=headers).status_code == 422


def test_the_async_client_waits_on_many_jobs_at_once(server: ServerHandle) -> None:
    async def main() -> tuple[list[str], list[FollowEvent], list[str]]:
        async with AsyncClient(server.url, server.token, experiment=f"aio{uuid.uuid4().hex[:8]}") as c:
            jobs = await asyncio.gather(
                *(c.create_job({"cluster": "local", "custom": {"command": f"sleep 1; echo {i}"}}) for i in range(4))
            )
            ended = await asyncio.gather(*(c.wait_job(j.name, timeout=60) for j in jobs))
            events = [e async for e in c.follow_job(jobs[0].name)]
            listed = [j.name async for j in c.iter_jobs(page_size=1)]
            assert sorted(listed) == sorted(j.name for j in jobs)
            with pytest.raises(NotFound):
                await c.get_job("no-such-job")
            return [j.state.value for j in ended], events, [await c.job_logs(j.name) for j in jobs]

    states, events, logs = asyncio.run(main())
    assert states == ["succeeded"] * 4
    assert events[-1].kind == "end" and events[-1].state == "succeeded"
    assert logs == [f"{i}\n" for i in range(4)]


def test_code_upload_reports_progress_and_happens_once(client: Client, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "run.sh").write_text("echo ran\n")
    (code / "weights.bin").write_bytes(os.urandom(3_200_000))  # 3.2 MB that gzip cannot shrink
    spec = {"cluster": "local", "code": str(code), "custom": {"command": "sh run.sh"}}
    seen: list[tuple[int, int]] = []
    job = client.create_job(spec, progress=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert total > 3_000_000 and seen[-1] == (total, total) and len(seen) >= 3  # 1 MiB at a time
    again: list[tuple[int, int]] = []
    second = client.create_job(spec, progress=lambda done, total: again.append((done, total)))
    assert again == []  # the same tree gives the same archive: not sent twice
    assert job.wait(timeout=60).logs() == second.wait(timeout=60).logs() == "ran\n"


def test_profiles_of_the_config_file(server: ServerHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "corral.yaml"))
    for var in ("CORRAL_SERVER", "CORRAL_TOKEN", "CORRAL_WORKSPACE", "CORRAL_EXPERIMENT", "CORRAL_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "nohome"))
    data = config.ConfigFile(
        current="here",
        profiles={
            "here": config.Profile(server=server.url, token=server.token, experiment="from-profile"),
            "elsewhere": config.Profile(server="http://198.18.0.99:1", workspace="ws2"),
        },
    )
    config.save_config(data)
    assert (tmp_path / "corral.yaml").stat().st_mode & 0o777 == 0o600
    with Client() as c:
        assert c.server == server.url and c.experiment == "from-profile" and c.workspace == "default"
        job = c.create_job({"cluster": "local", "custom": {"command": "true"}})
        assert job.experiment == "from-profile" and c.whoami().admin
    with Client(profile="elsewhere") as other:
        assert other.server == "http://198.18.0.99:1" and other.workspace == "ws2"
        assert "Authorization" not in other._http.headers
    monkeypatch.setenv("CORRAL_EXPERIMENT", "from-env")  # the environment outranks the profile
    assert Client().experiment == "from-env"
    monkeypatch.setenv("CORRAL_PROFILE", "missing")
    with pytest.raises(NotFound, match=r"profile 'missing' is not in .*elsewhere, here"):
        Client()


def test_the_local_token_never_goes_to_another_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    monkeypatch.delenv("CORRAL_PROFILE", raising=False)
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    (tmp_path / "token").write_text("admin-token\n")
    assert config.token("http://127.0.0.1:8765") == "admin-token"
    assert config.token("http://gpu-box.example:8765") is None
