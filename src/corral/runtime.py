"""What a job's own code can use inside Corral: the preemption notice and checkpoints.

The first call to :func:`preemption_requested` or :func:`on_preemption` installs a
SIGTERM handler (when the process has none of its own): Corral sends SIGTERM before
it takes a job's nodes away — a preemption, a node
removed by a resize, a terminate request — and SIGKILL after ``limits.termination_grace``.
In between, the job can save its state::

    from corral import runtime

    state = runtime.load_latest() or {"step": 0, ...}        # resumes after a requeue
    for step in range(state["step"], total):
        ...
        if step % 100 == 0 or runtime.preemption_requested():
            runtime.save({"step": step + 1, ...}, step=step + 1)
        if runtime.preemption_requested():
            runtime.exit_preempted()                          # not 0: the attempt did not finish

Checkpoints live in ``CORRAL_CHECKPOINT_DIR``, the same directory for every attempt
of a job. :func:`save` writes to a temporary file, syncs it and renames it into
place, then updates ``LATEST`` the same way, so a checkpoint is whole or absent; it
keeps the newest ``keep``. An attempt that starts while a checkpoint exists has
``CORRAL_RESUMED_FROM`` set to it.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from corral.launch.layout import CHECKPOINT_LATEST as LATEST

PREFIX = "checkpoint-"
#: What a job should exit with after saving on a notice: 128 + SIGTERM, as if the signal had ended it.
PREEMPTED_EXIT = 143

_requested = threading.Event()
_callbacks: list[Callable[[], None]] = []


def _on_sigterm(signum: int, frame: object) -> None:
    _requested.set()
    for callback in list(_callbacks):
        callback()


_installed = False


def _install() -> None:
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def preemption_requested() -> bool:
    """True once Corral has asked the job to stop (SIGTERM): save what matters and exit."""
    _install()
    return _requested.is_set()


def on_preemption(callback: Callable[[], None]) -> None:
    """Call ``callback`` (in the signal handler, on the main thread) when the notice comes."""
    _install()
    _callbacks.append(callback)
    if _requested.is_set():
        callback()


def exit_preempted() -> NoReturn:
    """Exit after a notice, saying the attempt did not finish (so the job is requeued, not succeeded)."""
    sys.exit(PREEMPTED_EXIT)


def checkpoint_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    found = directory or os.environ.get("CORRAL_CHECKPOINT_DIR")
    if not found:
        raise RuntimeError("no checkpoint directory: not running under Corral (CORRAL_CHECKPOINT_DIR is unset)")
    path = Path(found)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(
    obj: Any = None,
    *,
    step: int,
    keep: int = 3,
    writer: Callable[[Path], object] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Save a checkpoint for ``step``: ``obj`` pickled, or whatever ``writer(path)`` writes (``torch.save``...)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    folder = checkpoint_dir(directory)
    path = folder / f"{PREFIX}{step:012d}"
    _write_atomically(path, writer or (lambda p: p.write_bytes(pickle.dumps(obj))))
    _write_atomically(folder / LATEST, lambda p: p.write_text(path.name + "\n"))
    for old in sorted(folder.glob(f"{PREFIX}*"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest(directory: str | os.PathLike[str] | None = None) -> Path | None:
    """The newest checkpoint, or None."""
    try:
        folder = checkpoint_dir(directory)
        name = (folder / LATEST).read_text().strip()
    except (FileNotFoundError, RuntimeError):
        return None
    path = folder / name
    return path if name and path.exists() else None


def load_latest(*, reader: Callable[[Path], Any] | None = None, directory: str | os.PathLike[str] | None = None) -> Any:
    """The newest checkpoint's contents (unpickled, or ``reader(path)``), or None when there is none."""
    path = latest(directory)
    if path is None:
        return None
    return reader(path) if reader else pickle.loads(path.read_bytes())
