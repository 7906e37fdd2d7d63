"""Staging inputs from an object store: Corral's stage-in beside the same copy done directly with fsspec.

    python benchmarks/staging.py [--files 200] [--mib 64] [--trials 3] [--jobs 200]

Starts moto's S3 server (127.0.0.1) and a real Corral server (temporary home, SQLite, a 2-node local cluster),
puts FILES objects of MIB MiB in all in a bucket, and prints:

- the baseline: ``fs.get(prefix, dir, recursive=True)`` with s3fs, the direct fsspec copy (best and median of
  TRIALS, each into an empty folder);
- Corral's stage-in of the same prefix as a job's input, timed by the stager itself (listing, copy, size
  checks, rename into the cache): the first job copies (each trial uses a new prefix: nothing cached), and the
  ratio to the baseline (target >= 0.9x);
- a second job with the same input: the cached stage-in (target <= 1 s), and its whole prepare as the job sees it
  (submit -> succeeded of a job with that cached input, beside one without inputs);
- what an empty ``inputs: []`` costs dispatch: JOBS ``true`` jobs submitted at once, end-to-end throughput with
  ``inputs: []`` and without the field, alternated (target: no change beyond noise).

It prints figures only; it never fails on time.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dispatch import bench_server
from benchmarks.ray_backend import free_port
from corral.client.client import Client

KEY = {"access_key_id": "bench", "secret_access_key": "bench-secret"}


def start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).with_name("moto_server")
    with log.open("wb") as out:
        process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("moto's server did not start")


def put_dataset(endpoint: str, bucket: str, prefix: str, files: int, total: int) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=KEY["access_key_id"], aws_secret_access_key=KEY["secret_access_key"],
    )  # fmt: skip
    size = total // files
    data = os.urandom(size)
    for i in range(files):
        s3.put_object(
            Bucket=bucket, Key=f"{prefix}/part-{i // 50}/file-{i:04d}.bin", Body=data[i % 7 :] + data[: i % 7]
        )


def direct_copy(endpoint: str, bucket: str, prefix: str) -> float:
    import fsspec

    fs = fsspec.filesystem("s3", key=KEY["access_key_id"], secret=KEY["secret_access_key"], endpoint_url=endpoint,
                           client_kwargs={"region_name": "us-east-1"}, skip_instance_cache=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        fs.get(f"{bucket}/{prefix}/", tmp + "/", recursive=True)
        took = time.monotonic() - started
        copied = sum(1 for p in Path(tmp).rglob("*") if p.is_file())
    assert copied > 0, "the direct copy copied nothing"
    return took


def staged_seconds(client: Client, name: str) -> tuple[float, bool]:
    """The stager's own time for the job's input, and whether it came from the cache."""
    log = client.job_logs(name, stream="prepare")
    found = re.search(r"\((cached, )?(?:copied in )?([0-9.]+) s\)", log)
    assert found, log
    return float(found.group(2)), bool(found.group(1))


def run_job(client: Client, spec: dict[str, Any]) -> tuple[str, float]:
    job = client.create_job(spec)
    ended = client.wait_job(job.name, timeout=600)
    assert ended.state == "succeeded", (ended.error, client.job_logs(job.name, stream="prepare"))
    assert ended.started_at and ended.ended_at
    return job.name, (ended.ended_at - ended.created_at).total_seconds()


def throughput(client: Client, spec: dict[str, Any], jobs: int) -> float:
    """``jobs`` jobs of ``spec`` submitted at once: jobs per second, first submission to last end."""
    started = time.monotonic()
    names = [client.create_job(spec).name for _ in range(jobs)]
    for name in names:
        client.wait_job(name, timeout=600)
    return jobs / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    os.environ.pop("AWS_CA_BUNDLE", None)
    total = args.mib * 2**20
    with tempfile.TemporaryDirectory(prefix="corral-staging-") as tmp:
        port = free_port()
        moto = start_moto(port, Path(tmp) / "moto.log")
        endpoint = f"http://127.0.0.1:{port}"
        try:
            import boto3

            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                         aws_secret_access_key="y").create_bucket(Bucket="bench")  # fmt: skip
            prefixes = [f"set-{t}" for t in range(args.trials)]
            for prefix in prefixes:
                put_dataset(endpoint, "bench", prefix, args.files, total)
            print(f"dataset: {args.files} files, {args.mib} MiB, moto's S3 server at {endpoint}")
            direct = [direct_copy(endpoint, "bench", p) for p in prefixes]
            with bench_server("corral-bench-staging-", free_port(), "staging") as (_home, client):
                client.create_cluster({"name": "bench", "scale": {"nodes": 2}})
                volume = {"name": "bench", "kind": "s3", "bucket": "bench", "endpoint_url": endpoint,
                          "region": "us-east-1", "credentials": KEY}  # fmt: skip
                client.create_volume(volume)
                copies, cached, walls, bare = [], [], [], []
                for prefix in prefixes:
                    spec = {"cluster": "bench", "inputs": [{"id": "D", "path": f"vol://bench/{prefix}"}],
                            "custom": {"command": "test -d $CORRAL_INPUT_D/part-0"}}  # fmt: skip
                    first, _ = run_job(client, spec)
                    seconds, hit = staged_seconds(client, first)
                    assert not hit
                    copies.append(seconds)
                    second, wall = run_job(client, spec)
                    seconds, hit = staged_seconds(client, second)
                    assert hit
                    cached.append(seconds)
                    walls.append(wall)
                    bare.append(run_job(client, {"cluster": "bench", "custom": {"command": "true"}})[1])
                rates: dict[bool, list[float]] = {True: [], False: []}
                for _ in range(3):
                    for with_inputs in (False, True):
                        spec = {
                            "cluster": "bench",
                            "custom": {"command": "true"},
                            **({"inputs": []} if with_inputs else {}),
                        }
                        rates[with_inputs].append(throughput(client, spec, args.jobs))
        finally:
            moto.kill()
            moto.wait()
    mib = args.mib
    best_direct, best_copy = min(direct), min(copies)
    print(f"direct fsspec copy (baseline): best {best_direct:.2f} s ({mib / best_direct:.0f} MiB/s), "
          f"median {statistics.median(direct):.2f} s")  # fmt: skip
    print(
        f"corral stage-in, copied:       best {best_copy:.2f} s ({mib / best_copy:.0f} MiB/s), "
        f"median {statistics.median(copies):.2f} s -> {best_direct / best_copy:.2f}x the baseline (target >= 0.9x)"
    )
    print(f"corral stage-in, cached:       median {statistics.median(cached):.3f} s (target <= 1 s)")
    print(f"submit -> succeeded, cached input: median {statistics.median(walls):.2f} s; "
          f"no inputs: median {statistics.median(bare):.2f} s")  # fmt: skip
    print(
        f"dispatch, {args.jobs} true jobs: no inputs field {statistics.median(rates[False]):.0f} jobs/s, "
        f"inputs: [] {statistics.median(rates[True]):.0f} jobs/s (median of 3 each, alternated)"
    )


if __name__ == "__main__":
    main()
