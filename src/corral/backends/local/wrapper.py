"""The tiny shell wrapper every process of a job (and every node's prepare) runs under.

It is ``/bin/sh`` rather than Python because it runs once per process per job and
its cost is the floor of Corral's dispatch: it forks nothing but the subshell that
runs the user's command. It runs the command in the working directory, stdout and
stderr straight to files, then writes ``exit <code>`` to its exit file in one
``write()`` of a newline-terminated line. A reader accepts the file only with its
newline, so a wrapper killed mid-write reads as "no exit recorded", never as a
wrong code (and no ``mv`` process is spent on a rename).

SIGTERM sent to the process group reaches the user's processes; the wrapper traps
it so that it outlives them and records their true exit code. The subshell that runs
the user's command traps it too (programs it starts do not inherit a trap): a shell
runs a trap only once its foreground command has ended, so a program that handles
SIGTERM (to save a checkpoint) gets the whole grace period, and then the subshell
exits with that program's code (143 if it was 0: the command as a whole did not
finish) instead of running the rest of the user's commands.

The server runs with umask 077 (its home is its own); a job gets the usual 022, so what it writes to its
outputs is readable as it would be from a shell.

Its argv identifies it in ``/proc``: ``[sh, -c, SCRIPT, corral-node, <exit file>, ...]``;
the backend re-attaches to it by that after a restart (:func:`wrapper_pids`, :func:`read_exit`,
:func:`kill_session`, here with the script: the local backend and Ray's agents both use them).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

WRAPPER_SCRIPT = r"""
umask 022
_corral_x=$1 _corral_cmd=$3
trap ':' TERM INT HUP
cd "$2" || { printf 'exit 127\n' > "$_corral_x"; exit 0; }
( trap '_corral_rc=$?; [ "$_corral_rc" -eq 0 ] && _corral_rc=143; exit "$_corral_rc"' TERM INT HUP
  set --; eval "$_corral_cmd" ) >> "$4" 2>> "$5" < /dev/null
printf 'exit %s\n' "$?" > "$_corral_x"
"""

#: argv[0] of the wrapper's script; with the exit file as $1 it identifies a wrapper in /proc.
#: Arguments: exit file, working dir, command, stdout, stderr.
WRAPPER_NAME = "corral-node"


def wrapper_argv(exit_file: str, workdir: str, command: str, stdout: str, stderr: str) -> list[str]:
    """The argv that runs ``command`` under the wrapper."""
    return ["/bin/sh", "-c", WRAPPER_SCRIPT, WRAPPER_NAME, exit_file, workdir, command, stdout, stderr]


def parse_exit_file(text: str) -> int | None:
    """The exit code of ``exit 3\\n``; None while the file is incomplete."""
    if not text.endswith("\n"):
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] != "exit":
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


def read_exit(exit_file: str) -> int | None:
    with contextlib.suppress(FileNotFoundError):
        return parse_exit_file(Path(exit_file).read_text())
    return None


def _session_of(pid: str) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def kill_session(session: int) -> None:
    """SIGKILL every process of a session (the wrapper's): its children may have left its process group."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if _session_of(entry) == session:
                    os.kill(int(entry), signal.SIGKILL)


def started(exit_file: str, log: str, live: dict[str, int]) -> bool:
    """Whether a wrapper ever ran: it is alive, or it left its log (opened as it starts the command) or its exit
    record. A server stopped between making a job's folders and starting its wrappers left none of them."""
    return exit_file in live or os.path.exists(log) or os.path.exists(exit_file)


def wrapper_pids() -> dict[str, int]:
    """Exit file -> pid of every wrapper alive on this machine, from one scan of /proc.

    The wrapper's subshells share its argv; the wrapper is the one that leads its session.
    """
    found = {}
    name = WRAPPER_NAME.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if len(argv) <= 4 or argv[3] != name:
                continue
            session = _session_of(entry)
        except (OSError, ValueError, IndexError):
            continue
        if session == int(entry):
            found[argv[4].decode(errors="replace")] = int(entry)
    return found
