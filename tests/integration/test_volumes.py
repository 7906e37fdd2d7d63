"""Volumes through a real server, against real stores (moto's S3 server, Azurite): made, checked, listed, copied
up and down, never showing their credentials; and jobs that stage their inputs from them into the machine's
cache, once."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from corral.client.client import Client
from corral.core.errors import AlreadyExists, Forbidden, InvalidRequest, InvalidSpec, NotFound
from tests.conftest import ServerHandle, passable, until
from tests.data_stores import AZURITE_KEY, S3_KEY, AzuriteServer, S3Server


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _dataset(root: Path) -> dict[str, bytes]:
    (root / "train" / "part").mkdir(parents=True)
    files = {"a.bin": bytes(range(256)) * 400, "train/b.txt": b"hello\n", "train/part/c.csv": b"x,y\n1,2\n"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def test_a_volume_never_shows_its_credentials(server: ServerHandle, s3_server: S3Server) -> None:
    c = server.client()
    spec = s3_server.volume(f"s3-{_tag()}", "creds")
    made = c.create_volume(spec)
    assert made.kind == "s3" and made.has_credentials and made.spec["bucket"] == "creds"
    assert "credentials" not in made.spec
    for text in (made.model_dump_json(), c.get_volume(made.name).model_dump_json(),
                 "".join(v.model_dump_json() for v in c.list_volumes())):  # fmt: skip
        assert S3_KEY["secret_access_key"] not in text and S3_KEY["access_key_id"] not in text
    assert S3_KEY["secret_access_key"] not in (server.home / "server.log").read_text()
    if server.database_url.startswith("sqlite"):  # sealed at rest
        db = sqlite3.connect(server.database_url.removeprefix("sqlite:///"))
        raw = db.execute("SELECT credentials FROM volumes WHERE name = ?", (made.name,)).fetchone()[0]
        assert S3_KEY["secret_access_key"] not in raw and "fernet:" in raw
    with pytest.raises(AlreadyExists):
        c.create_volume(spec)
    c.delete_volume(made.name)
    with pytest.raises(NotFound):
        c.get_volume(made.name)


def test_a_wrong_volume_is_refused_saying_what_is_wrong(
    server: ServerHandle, s3_server: S3Server, azurite: AzuriteServer
) -> None:
    c = server.client()
    good = s3_server.volume(f"bad-{_tag()}", "exists")
    with pytest.raises(InvalidSpec, match="kind: must be one of s3, azureblob, path, got 'nfs'"):
        c.create_volume({**good, "kind": "nfs"})
    with pytest.raises(InvalidSpec, match=r"prefix: .*'\.\.'") as bad_prefix:
        c.create_volume({**good, "prefix": "data/../other"})
    assert bad_prefix.value.details[0]["loc"] == "prefix"
    with pytest.raises(InvalidSpec, match="bucket"):
        c.create_volume({**good, "bucket": "Not_A_Bucket"})
    long_secret = "Z" * 5000
    with pytest.raises(InvalidSpec, match="secret_access_key: is too long") as too_long:
        c.create_volume({**good, "credentials": {**S3_KEY, "secret_access_key": long_secret}})
    assert long_secret not in str(too_long.value) and long_secret not in str(too_long.value.details)
    with pytest.raises(InvalidRequest, match="the bucket 'no-such-bucket' does not exist"):
        c.create_volume({**good, "bucket": "no-such-bucket"})
    with pytest.raises(InvalidRequest, match="could not reach the bucket"):
        c.create_volume({**good, "endpoint_url": "http://127.0.0.1:9"})
    az = azurite.volume(f"az-{_tag()}", "wrongkey")
    wrong = "A" * 20 + AZURITE_KEY[20:]
    with pytest.raises(InvalidRequest, match="refused these credentials") as refused:
        c.create_volume({**az, "credentials": {"account_key": wrong}})
    assert wrong not in refused.value.message
    with pytest.raises(InvalidSpec, match="give one of account_key or sas_token"):
        c.create_volume({**az, "credentials": {}})
    assert not [v for v in c.list_volumes() if v.name.startswith(("bad-", "az-"))]  # nothing half made


def test_only_admins_make_path_volumes(server: ServerHandle, tmp_path: Path) -> None:
    admin = server.client()
    owner_name = f"owner-{_tag()}"
    token = admin.create_user(owner_name).token
    admin.set_member(owner_name, "owner")
    owner = Client(server=server.url, token=token)
    try:
        with pytest.raises(Forbidden, match="only admins make path volumes"):
            owner.create_volume({"name": "shared", "kind": "path", "path": str(tmp_path)})
        made = admin.create_volume({"name": f"dir-{_tag()}", "kind": "path", "path": str(tmp_path)})
        assert [v.name for v in owner.list_volumes() if v.name == made.name] == [made.name]  # members see it
    finally:
        owner.close()


@pytest.mark.parametrize("store", ["s3", "azureblob", "path"])
def test_files_go_up_and_come_back_byte_for_byte(
    store: str, server: ServerHandle, s3_server: S3Server, azurite: AzuriteServer, tmp_path: Path
) -> None:
    c = server.client()
    name = f"{store}-{_tag()}"
    if store == "s3":
        spec = s3_server.volume(name, "roundtrip", prefix="team/a")
    elif store == "azureblob":
        spec = azurite.volume(name, "roundtrip", prefix="team/a")
    else:
        (tmp_path / "shared").mkdir()
        spec = {"name": name, "kind": "path", "path": str(tmp_path / "shared")}
    c.create_volume(spec)
    files = _dataset(tmp_path / "up")
    written = c.upload_to_volume(name, tmp_path / "up", "data")
    assert sorted(written) == sorted(f"data/{f}" for f in files)
    listed = {e.name: e for e in c.list_volume_files(name, "data")}
    assert set(listed) == {"a.bin", "train"} and listed["train"].is_dir and listed["a.bin"].size == len(files["a.bin"])
    assert listed["train"].path == "data/train"
    c.download_from_volume(name, "data", tmp_path / "down")
    assert _tree(tmp_path / "down") == files
    one = c.download_from_volume(name, "data/train/b.txt", tmp_path)
    assert one == [tmp_path / "b.txt"] and (tmp_path / "b.txt").read_bytes() == b"hello\n"
    with pytest.raises(InvalidRequest, match=r"'\.\.'"):
        list(c.list_volume_files(name, "data/../.."))
    with pytest.raises(NotFound):
        c.download_from_volume(name, "data/none.bin", tmp_path / "none")


def test_a_job_stages_its_inputs_once_and_reads_them_where_corral_says(
    server: ServerHandle, s3_server: S3Server, azurite: AzuriteServer, tmp_path: Path
) -> None:
    c = server.client(experiment="staging")
    tag = _tag()
    c.create_volume(s3_server.volume(f"in-{tag}", "inputs", prefix="sets"))
    c.create_volume(azurite.volume(f"az-{tag}", "inputs"))
    files = _dataset(tmp_path / "set")
    c.upload_to_volume(f"in-{tag}", tmp_path / "set", f"{tag}/digits")
    c.upload_to_volume(f"az-{tag}", tmp_path / "set" / "train" / "b.txt", f"{tag}/model.txt")
    digest = "cd $CORRAL_INPUT_DATA && find . -type f | sort | xargs sha256sum; cat $CORRAL_INPUT_MODEL"
    spec = {
        "cluster": "local",
        "inputs": [
            {"id": "DATA", "path": f"vol://in-{tag}/{tag}/digits"},
            {"id": "MODEL", "path": f"az://inputs/{tag}/model.txt"},
        ],
        "custom": {"command": digest},
    }
    expected = "".join(f"{hashlib.sha256(d).hexdigest()}  ./{n}\n" for n, d in sorted(files.items())) + "hello\n"
    first = c.wait_job(c.create_job(spec).name, timeout=120)
    assert first.state == "succeeded", (first.error, c.job_logs(first.name, stream="prepare"))
    assert c.job_logs(first.name) == expected
    prepared = c.job_logs(first.name, stream="prepare")
    assert "input DATA: 3 files" in prepared and "copied in" in prepared, prepared
    assert S3_KEY["secret_access_key"] not in prepared
    second = c.wait_job(c.create_job(spec).name, timeout=120)
    assert second.state == "succeeded" and c.job_logs(second.name) == expected
    assert "input DATA: 3 files" in c.job_logs(second.name, stream="prepare")
    assert "(cached, " in c.job_logs(second.name, stream="prepare")  # nothing copied again
    # A changed object is a changed input: copied again, and the job reads the new bytes.
    (tmp_path / "set" / "train" / "b.txt").write_bytes(b"changed\n")
    c.upload_to_volume(f"in-{tag}", tmp_path / "set" / "train" / "b.txt", f"{tag}/digits/train/b.txt")
    third = c.wait_job(c.create_job(spec).name, timeout=120)
    assert third.state == "succeeded" and hashlib.sha256(b"changed\n").hexdigest() in c.job_logs(third.name)
    assert "copied in" in c.job_logs(third.name, stream="prepare")


def test_an_input_on_no_volume_is_refused_at_submission(server: ServerHandle, s3_server: S3Server) -> None:
    c = server.client()
    base = {"cluster": "local", "custom": {"command": "true"}}
    with pytest.raises(InvalidSpec, match="no volume 'nowhere'") as unknown:
        c.create_job({**base, "inputs": [{"id": "X", "path": "vol://nowhere/data"}]})
    assert unknown.value.details[0]["loc"] == "inputs.0.path"
    with pytest.raises(InvalidSpec, match="no volume of the workspace holds s3://unheld-bucket/x"):
        c.create_job({**base, "inputs": [{"id": "X", "path": "s3://unheld-bucket/x"}]})
    with pytest.raises(InvalidSpec, match=r"outputs\.0\.path: .*'\.\.'"):  # never outside its volume
        c.create_job({**base, "outputs": [{"id": "X", "path": "vol://somewhere/models/../../x"}]})
    with pytest.raises(InvalidSpec, match="scheme 'gs'"):
        c.create_job({**base, "inputs": [{"id": "X", "path": "gs://bucket/x"}]})
    with pytest.raises(InvalidSpec, match=r"outputs\.1\.path: no volume of the workspace holds s3://bucket/x"):
        c.create_job({**base, "outputs": [{"id": "L", "path": "/tmp/x"}, {"id": "X", "path": "s3://bucket/x"}]})


def test_a_job_whose_input_is_missing_fails_saying_which(server: ServerHandle, s3_server: S3Server) -> None:
    c = server.client(experiment="staging")
    tag = _tag()
    c.create_volume(s3_server.volume(f"gone-{tag}", "inputs"))
    job = c.create_job({"cluster": "local", "inputs": [{"id": "DATA", "path": f"vol://gone-{tag}/not/there"}],
                        "custom": {"command": "true"}, "retry": {"max_attempts": 1}})  # fmt: skip
    ended = c.wait_job(job.name, timeout=60)
    assert ended.state == "failed"
    assert f"input DATA: could not stage vol://gone-{tag}/not/there" in c.job_logs(job.name, stream="prepare")


def _manifest(server: ServerHandle, c: Client, name: str, node: int = 0) -> list[dict[str, object]]:
    job = c.get_job(name)
    path = Path(job.job_dir, "stdouterr", f"attempt-{len(job.attempts)}", f"upload-manifest-{node}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_outputs_reach_their_volumes_before_the_job_succeeds(
    server: ServerHandle, s3_server: S3Server, azurite: AzuriteServer, tmp_path: Path
) -> None:
    c = server.client(experiment="uploads")
    tag = _tag()
    c.create_volume(s3_server.volume(f"out-{tag}", "outputs", prefix="runs"))
    c.create_volume(azurite.volume(f"azout-{tag}", "outputs"))
    weights = "$CORRAL_OUTPUT_MODEL/weights/w-$CORRAL_NODE_RANK.bin"
    write = (
        f"mkdir -p $CORRAL_OUTPUT_MODEL/weights && head -c 300000 /dev/urandom > {weights}"
        " && echo node $CORRAL_NODE_RANK > $CORRAL_OUTPUT_REPORT/report-$CORRAL_NODE_RANK.txt"
        f" && sha256sum {weights}"
    )
    spec = {
        "cluster": "local",
        "node_count": 2,
        "outputs": [
            {"id": "MODEL", "path": f"vol://out-{tag}/models"},
            {"id": "REPORT", "path": "az://outputs/reports", "suffix": "final"},
        ],
        "custom": {"command": write},
    }
    job = c.wait_job(c.create_job(spec).name, timeout=120)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="upload"))
    steps = [(e.to_state, e.reason) for e in c.job_events(job.name)]
    assert steps[-2:] == [("running", "UploadingOutputs"), ("succeeded", "Exited")], steps
    under = f"uploads/{job.name}/{c.get_job(job.name).uid}"  # <workspace>/<experiment>/<job>/<uid>
    c.download_from_volume(f"out-{tag}", f"models/default/{under}/MODEL", tmp_path / "model")
    got = _tree(tmp_path / "model")
    assert sorted(got) == ["weights/w-0.bin", "weights/w-1.bin"] and all(len(b) == 300000 for b in got.values())
    for rank in range(2):  # the bytes in the store are the bytes the job wrote
        written = c.job_logs(job.name, rank=rank).split()[0]
        assert hashlib.sha256(got[f"weights/w-{rank}.bin"]).hexdigest() == written
        manifest = _manifest(server, c, job.name, rank)
        mine = {m["path"]: m for m in manifest if m["output"] == "MODEL"}
        assert mine[f"weights/w-{rank}.bin"]["sha256"] == written and mine[f"weights/w-{rank}.bin"]["size"] == 300000
        assert "output MODEL: 1 file" in c.job_logs(job.name, stream="upload", rank=rank)
    c.download_from_volume(f"azout-{tag}", f"reports/default/{under}/final", tmp_path / "report")
    assert _tree(tmp_path / "report") == {"report-0.txt": b"node 0\n", "report-1.txt": b"node 1\n"}
    # The job's own view of its outputs, wherever they are: job files / job download.
    assert {e.name for e in c.list_files(job.name)} == {"MODEL", "REPORT", "stdouterr"}
    assert [e.name for e in c.list_files(job.name, output="REPORT")] == ["report-0.txt", "report-1.txt"]
    c.download(job.name, output="MODEL", destination=tmp_path / "via-job")
    assert _tree(tmp_path / "via-job") == got


def test_an_upload_that_fails_fails_the_attempt_and_the_retry_uploads(
    server: ServerHandle, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The S3 server stops while the job runs: its upload fails, OutputUploadFailed, and the next attempt (the
    server back) uploads; never a success without the outputs."""
    from tests.data_stores import start_s3_server

    c = server.client(experiment="uploads")
    tag = _tag()
    store = start_s3_server(tmp_path_factory.mktemp("moto-stop"))
    try:
        c.create_volume(store.volume(f"flaky-{tag}", "flaky"))
        command = 'sleep 2; echo "attempt $CORRAL_ATTEMPT" > $CORRAL_OUTPUT_OUT/result.txt'
        spec = {
            "cluster": "local",
            "outputs": [{"id": "OUT", "path": f"vol://flaky-{tag}/r"}],
            "custom": {"command": command},
        }
        job = c.create_job(spec)
        store.stop()  # gone before the job ends
        until(lambda: len(c.get_job(job.name).attempts) >= 2, timeout=60)
        first = c.get_job(job.name).attempts[0]
        assert first.reason == "OutputUploadFailed", first
        requeued = next(e for e in c.job_events(job.name) if e.reason == "OutputUploadFailed")
        assert f"output OUT: upload to vol://flaky-{tag}/r failed" in (requeued.message or ""), requeued
        store.start()  # back, empty: its bucket made again
        store.volume(f"flaky-{tag}", "flaky")
        ended = c.wait_job(job.name, timeout=120)
        assert ended.state == "succeeded", ended.error
        uid = c.get_job(job.name).uid
        found = list(c.list_volume_files(f"flaky-{tag}", f"r/default/uploads/{job.name}/{uid}/OUT"))
        assert [e.name for e in found] == ["result.txt"]
    finally:
        store.stop()


def test_mounts_a_shared_directory_for_every_node_and_a_bucket_for_the_job(
    server: ServerHandle, s3_server: S3Server, tmp_path: Path
) -> None:
    """A cluster's mount of a path volume: both nodes of one job see the same directory (node 0 writes, node 1
    reads); a job's mount of an S3 volume: a copy under its job mount root."""
    c = server.client(experiment="mounts")
    tag = _tag()
    shared = passable(tmp_path / "nfs")
    shared.mkdir()
    shared.chmod(0o777)
    c.create_volume({"name": f"nfs-{tag}", "kind": "path", "path": str(shared)})
    c.create_volume(s3_server.volume(f"b-{tag}", "mounted", prefix=tag))
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "config.txt").write_text("lr=0.1\n")
    c.upload_to_volume(f"b-{tag}", tmp_path / "up")
    cluster = f"mnt-{tag}"
    c.create_cluster({"name": cluster, "scale": {"nodes": 2}, "mounts": [{"volume": f"nfs-{tag}", "path": "nfs"}]})
    handshake = (
        'if [ "$CORRAL_NODE_RANK" = 0 ]; then echo "from node 0" > $CORRAL_MOUNT_ROOT/nfs/$CORRAL_JOB_ID; '
        "else for i in $(seq 100); do [ -f $CORRAL_MOUNT_ROOT/nfs/$CORRAL_JOB_ID ] && break; sleep 0.1; done; "
        "cat $CORRAL_MOUNT_ROOT/nfs/$CORRAL_JOB_ID; fi; cat $CORRAL_JOB_MOUNT_ROOT/settings/config.txt"
    )
    spec = {"cluster": cluster, "node_count": 2, "mounts": [{"volume": f"b-{tag}", "path": "settings"}],
            "custom": {"command": handshake}}  # fmt: skip
    job = c.wait_job(c.create_job(spec).name, timeout=120)
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="prepare"))
    assert c.job_logs(job.name, rank=1) == "from node 0\nlr=0.1\n"
    assert (shared / c.get_job(job.name).uid).read_text() == "from node 0\n"  # the directory itself, not a copy
    assert "a shared directory, not copied" in c.job_logs(job.name, stream="prepare")
    with pytest.raises(InvalidSpec, match=r"mounts\.0\.volume: the workspace has no volume 'nope'"):
        c.create_job({**spec, "mounts": [{"volume": "nope", "path": "x"}]})
    with pytest.raises(InvalidSpec, match=r"mounts\.0\.path"):
        c.create_job({**spec, "mounts": [{"volume": f"b-{tag}", "path": "../up"}]})
    c.delete_cluster(cluster)


def test_a_preempted_job_uploads_what_it_wrote_before_it_goes_back_to_the_queue(
    server: ServerHandle, s3_server: S3Server
) -> None:
    c = server.client(experiment="uploads")
    tag = _tag()
    c.create_volume(s3_server.volume(f"pre-{tag}", "preempted"))
    cluster = f"spot-{tag}"
    c.create_cluster({"name": cluster, "priority": "low", "scale": {"nodes": 1}})
    command = (
        'echo "attempt $CORRAL_ATTEMPT" > $CORRAL_OUTPUT_CKPT/progress-$CORRAL_ATTEMPT.txt; '
        'trap "exit 143" TERM; if [ "$CORRAL_ATTEMPT" = 1 ]; then sleep 300 & wait; fi'
    )
    spec = {"cluster": cluster, "custom": {"command": command}, "limits": {"termination_grace": "5s"},
            "outputs": [{"id": "CKPT", "path": f"vol://pre-{tag}/ckpt"}]}  # fmt: skip
    job = c.create_job(spec)
    until(lambda: c.get_job(job.name).state == "running")
    time.sleep(0.5)  # its file written
    c.preempt_node(cluster, "node-0")
    done = c.wait_job(job.name, timeout=90)
    assert done.state == "succeeded" and [a.reason for a in done.attempts] == ["Preempted", "Exited"]
    names = [e.name for e in c.list_files(job.name, output="CKPT")]
    assert names == ["progress-1.txt", "progress-2.txt"], names  # attempt 1's, from its last sync
    assert "output CKPT: 1 file" in c.job_logs(job.name, stream="upload", attempt=1)
    c.delete_cluster(cluster)


def test_an_output_synced_while_the_job_runs_is_in_the_store_before_it_ends(
    server: ServerHandle, s3_server: S3Server
) -> None:
    c = server.client(experiment="uploads")
    tag = _tag()
    c.create_volume(s3_server.volume(f"sync-{tag}", "synced"))
    command = "echo early > $CORRAL_OUTPUT_LOG/early.txt; sleep 30 & wait; echo late > $CORRAL_OUTPUT_LOG/late.txt"
    output = {"id": "LOG", "path": f"vol://sync-{tag}/logs", "sync_every": "1s"}
    job = c.create_job({"cluster": "local", "outputs": [output], "custom": {"command": command}})
    until(lambda: [e.name for e in c.list_files(job.name, output="LOG")] == ["early.txt"], timeout=30)
    assert c.get_job(job.name).state == "running"  # synced while it runs
    c.terminate_job(job.name)
    ended = c.wait_job(job.name, timeout=60)
    assert ended.state == "terminated"
    with pytest.raises(InvalidSpec, match="sync_every: only an output on a volume"):
        c.create_job({"cluster": "local", "custom": {"command": "true"},
                      "outputs": [{"id": "X", "path": "/tmp/x", "sync_every": "1m"}]})  # fmt: skip
    done = c.wait_job(
        c.create_job(
            {"cluster": "local", "outputs": [output], "custom": {"command": command.replace("sleep 30", "sleep 3")}}
        ).name,
        timeout=60,
    )
    assert done.state == "succeeded"
    assert [e.name for e in c.list_files(done.name, output="LOG")] == ["early.txt", "late.txt"]


def test_paths_under_mount_roots_resolve_on_each_node(server: ServerHandle, tmp_path: Path) -> None:
    """``$CORRAL_MOUNT_ROOT/...`` (and its Batch AI twin) in inputs and outputs: the client leaves them alone, the
    node resolves them; an output in a mounted shared directory is listed from it."""
    c = server.client(experiment="macros")
    tag = _tag()
    shared = passable(tmp_path / "share")
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "x.txt").write_text("shared input\n")
    shared.chmod(0o777)
    c.create_volume({"name": f"share-{tag}", "kind": "path", "path": str(shared)})
    cluster = f"macro-{tag}"
    c.create_cluster({"name": cluster, "scale": {"nodes": 1}, "mounts": [{"volume": f"share-{tag}", "path": "afs"}]})
    (tmp_path / "job.yaml").write_text(json.dumps({
        "cluster": cluster,
        "inputs": [{"id": "DATA", "path": "$CORRAL_MOUNT_ROOT/afs/data"}],
        "outputs": [{"id": "OUT", "path": "$AZ_BATCHAI_MOUNT_ROOT/afs/results"},
                    {"id": "SCRATCH", "path": "${CORRAL_JOB_MOUNT_ROOT}/scratch"}],
        "custom": {"command": "cat $CORRAL_INPUT_DATA/x.txt > $CORRAL_OUTPUT_OUT/copy.txt && "
                              "test -d $CORRAL_OUTPUT_SCRATCH && echo $CORRAL_INPUT_DATA"},
    }))  # fmt: skip
    job = c.wait_job(c.create_job(tmp_path / "job.yaml").name, timeout=60)  # a file: the client resolves paths
    assert job.state == "succeeded", (job.error, c.job_logs(job.name, stream="stderr"))
    assert c.job_logs(job.name).strip().endswith("/mounts/afs/data")
    assert [e.name for e in c.list_files(job.name, output="OUT")] == ["copy.txt"]
    uid = c.get_job(job.name).uid
    assert (shared / "results" / "default" / "macros" / job.name / uid / "OUT" / "copy.txt").read_text() == (
        "shared input\n"
    )
    assert {e.name for e in c.list_files(job.name)} == {"OUT", "stdouterr"}  # SCRATCH: the node's own disk
    with pytest.raises(InvalidSpec, match=r"inputs\.0\.path: .*got '\$HOME'"):
        c.create_job({"cluster": cluster, "custom": {"command": "true"}, "inputs": [{"id": "H", "path": "$HOME/x"}]})
    with pytest.raises(InvalidSpec, match=r"outputs\.0\.path: .*'\.\.'"):
        c.create_job({"cluster": cluster, "custom": {"command": "true"},
                      "outputs": [{"id": "H", "path": "$CORRAL_MOUNT_ROOT/../x"}]})  # fmt: skip
    c.delete_cluster(cluster)


def fuse_missing() -> str | None:
    import shutil

    if not Path("/dev/fuse").exists():
        return "no /dev/fuse here"
    if shutil.which("rclone") is None or shutil.which("fusermount3") is None:
        return "rclone and fuse3 are not installed (apt-get install rclone fuse3)"
    return None


def test_a_write_to_a_mounted_bucket_right_before_exit_is_in_the_store(
    server: ServerHandle, s3_server: S3Server, azurite: AzuriteServer, tmp_path: Path
) -> None:
    """rclone forgets writes not yet uploaded when its mount goes (measured); the job's end writes them back
    first. The job writes 20 MB and a small file and exits at once: both are in the bucket when it succeeds."""
    reason = fuse_missing()
    if reason is not None:
        if os.environ.get("CI") == "true" and Path("/dev/fuse").exists():
            pytest.fail(f"CI must run the FUSE mount test where /dev/fuse is: {reason}")
        pytest.skip(reason)
    c = server.client(experiment="fuse")
    tag = _tag()
    c.create_volume(s3_server.volume(f"live-{tag}", "fuse", prefix=tag))
    command = (
        "head -c 20000000 /dev/urandom > $CORRAL_JOB_MOUNT_ROOT/live/big.bin && "
        "echo last > $CORRAL_JOB_MOUNT_ROOT/live/last.txt && sha256sum $CORRAL_JOB_MOUNT_ROOT/live/big.bin"
    )
    spec = {"cluster": "local", "mounts": [{"volume": f"live-{tag}", "path": "live", "mode": "mount"}],
            "custom": {"command": command}, "retry": {"max_attempts": 1}}  # fmt: skip
    job = c.wait_job(c.create_job(spec).name, timeout=120)
    logs = (c.job_logs(job.name, stream="prepare"), c.job_logs(job.name, stream="upload"))
    assert job.state == "succeeded", (job.error, logs)
    assert {e.name: e.size for e in c.list_volume_files(f"live-{tag}")} == {"big.bin": 20000000, "last.txt": 5}
    c.download_from_volume(f"live-{tag}", "big.bin", tmp_path)
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == c.job_logs(job.name).split()[0]
    assert "written back" in logs[1]
    assert c.get_job(job.name).uid not in Path("/proc/mounts").read_text()  # unmounted
    c.create_volume(azurite.volume(f"azlive-{tag}", "fuse"))
    with pytest.raises(InvalidSpec, match=r"mounts\.0\.mode: mount is available for s3 volumes"):
        c.create_job({**spec, "mounts": [{"volume": f"azlive-{tag}", "path": "live", "mode": "mount"}]})
