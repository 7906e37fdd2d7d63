"""What a job's own code can use inside Corral: metrics, the preemption notice and checkpoints.

:func:`report` records metrics, which the server stores as the job runs (``corral job metrics NAME``)::

    from corral import runtime

    runtime.report(step=epoch, loss=loss, val_acc=acc)

It only appends to a queue (about a microsecond); a background thread writes the queue to
``$CORRAL_METRICS_FILE`` every tenth of a second and when the process exits, so training never waits on a disk.

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

import atexit
import json
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from corral.launch.layout import CHECKPOINT_LATEST as LATEST
from corral.launch.layout import METRICS_VARIABLE

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
    flush()
    sys.exit(PREEMPTED_EXIT)


# ---------------------------------------------------------------- metrics

#: How often the background thread writes the reported metrics.
FLUSH_SECONDS = 0.1
#: (step, time, metrics) reported and not yet written; appending to a deque is thread-safe.
_reported: deque[tuple[int | None, float, dict[str, float]]] = deque()
_writer: threading.Thread | None = None
_writer_lock = threading.Lock()
_write_lock = threading.Lock()


def report(step: int | None = None, **metrics: float) -> None:
    """Record ``metrics`` (names to numbers: ``loss=0.41``, a 0-d tensor too) at ``step`` (else the series'
    next). Outside Corral (no ``$CORRAL_METRICS_FILE``) nothing is kept."""
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(f"step: a whole number >= 0, got {step!r}")
    values = {name: float(value) for name, value in metrics.items()}
    if _writer is None:
        _start_writer()
    _reported.append((step, time.time(), values))


def flush() -> None:
    """Write what :func:`report` has recorded now (the background thread does it every tenth of a second)."""
    path = os.environ.get(METRICS_VARIABLE)
    with _write_lock:
        lines = []
        while _reported:
            step, at, values = _reported.popleft()
            line: dict[str, Any] = {"time": round(at, 6), **values}
            if step is not None:
                line["step"] = step
            if _rank is not None:
                line["rank"] = _rank
            lines.append(json.dumps(line) + "\n")
        if lines and path:
            with open(path, "a") as f:
                f.write("".join(lines))


def _launched_rank() -> int | None:
    """The rank where one launcher (mpirun) started many ranks with one metrics file; else the file's own."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


_rank = _launched_rank()


def _start_writer() -> None:
    global _writer
    with _writer_lock:
        if _writer is not None:
            return
        _writer = threading.Thread(target=_write_forever, name="corral-metrics", daemon=True)
        _writer.start()
        atexit.register(flush)


def _write_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            flush()
        except OSError as exc:  # a full disk: say it once a while, keep training
            print(f"corral.runtime: could not write metrics: {exc}", file=sys.stderr)


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
