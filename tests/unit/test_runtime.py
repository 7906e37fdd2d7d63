"""corral.runtime: atomic checkpoints that keep the newest K, and the preemption notice (a real SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corral import runtime


def test_save_keeps_the_newest_and_loads_the_latest(tmp_path: Path) -> None:
    assert runtime.load_latest(directory=tmp_path) is None
    for step in (10, 20, 30, 40):
        runtime.save({"step": step}, step=step, keep=2, directory=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["LATEST", "checkpoint-000000000030", "checkpoint-000000000040"], "no temporary file left"
    assert runtime.load_latest(directory=tmp_path) == {"step": 40}
    assert runtime.latest(directory=tmp_path) == tmp_path / "checkpoint-000000000040"
    custom = runtime.save(step=50, writer=lambda p: p.write_text("weights"), directory=tmp_path)
    assert runtime.load_latest(reader=lambda p: p.read_text(), directory=tmp_path) == "weights"
    assert custom.name == "checkpoint-000000000050"
    with pytest.raises(ValueError, match="keep"):
        runtime.save({}, step=1, keep=0, directory=tmp_path)


def test_without_corral_there_is_no_checkpoint_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_CHECKPOINT_DIR", raising=False)
    assert runtime.latest() is None
    with pytest.raises(RuntimeError, match="CORRAL_CHECKPOINT_DIR"):
        runtime.save({}, step=1)


def test_the_notice_sets_the_flag_and_calls_back(tmp_path: Path) -> None:
    script = (
        "import os, signal, time\n"
        "from corral import runtime\n"
        "runtime.on_preemption(lambda: print('callback', flush=True))\n"
        "print('ready', flush=True)\n"
        "while not runtime.preemption_requested(): time.sleep(0.01)\n"
        "print('saving', flush=True)\n"
        "runtime.exit_preempted()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    os.kill(child.pid, signal.SIGTERM)
    out, _ = child.communicate(timeout=30)
    assert (child.returncode, out) == (runtime.PREEMPTED_EXIT, "callback\nsaving\n")
