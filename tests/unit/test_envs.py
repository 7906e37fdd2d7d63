"""The cache of job environments on a machine (corral.envs.build): listing, pruning, the size bound."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from corral.envs.build import COMPLETE, SPEC_LINK, environments, prune


def make_env(envs: Path, name: str, size: int, age: float, complete: bool = True) -> None:
    folder = envs / name
    folder.mkdir(parents=True)
    (folder / "blob").write_bytes(b"x" * size)
    if complete:
        (folder / COMPLETE).write_text(json.dumps({"interpreter": "/usr/bin/python3 3.11.7", "spec": {}}))
    old = time.time() - age
    os.utime(folder, (old, old))


def test_the_least_recently_used_go_until_the_limit_never_the_one_in_hand_nor_a_recent_one(tmp_path: Path) -> None:
    envs = tmp_path / str(os.getuid()) / "envs"
    make_env(envs, "oldest", 1000, age=10 * 3600)
    make_env(envs, "older", 1000, age=5 * 3600)
    make_env(envs, "recent", 1000, age=60)  # used a minute ago: a running job may be in it
    make_env(envs, "mine", 1000, age=20 * 3600)  # the one being used now
    make_env(envs, "half", 5000, age=30 * 3600, complete=False)  # a build killed halfway: not an environment
    (envs / f"{SPEC_LINK}abc").symlink_to("oldest")
    assert {e["hash"] for e in environments(tmp_path)} == {"oldest", "older", "recent", "mine"}
    removed = prune(tmp_path, 3600, limit=2500, keep="mine")
    assert removed == ["oldest", "older"]  # 4000 bytes -> 2000: the two least recently used that may go
    assert not (envs / "oldest").exists() and not (envs / f"{SPEC_LINK}abc").is_symlink()
    assert (envs / "recent").exists() and (envs / "mine").exists()
    assert prune(tmp_path, 0) == ["mine", "recent"]  # corral env prune --older-than 0s: all that are complete
