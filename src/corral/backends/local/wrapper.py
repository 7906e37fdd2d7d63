"""The tiny shell wrapper every node's work runs under.

It is ``/bin/sh`` rather than Python because it runs once per node per job and
its cost is the floor of Corral's dispatch: it forks nothing but the subshells
that run the user's commands. It:

1. runs ``prepare.command`` (output to the prepare log) and stops there if it fails;
2. runs the job's command in the working directory, stdout/stderr straight to files;
3. writes ``exit <code>`` (or ``prepare <code>``) to the node's exit file in one
   ``write()`` of a newline-terminated line. A reader accepts the file only with its
   newline, so a wrapper killed mid-write reads as "no exit recorded", never as a
   wrong code (and no ``mv`` process is spent on a rename).

SIGTERM sent to the process group reaches the user's processes; the wrapper
traps it so that it outlives them and records their true exit code. The user's
commands run in subshells, where the trap is reset to the default.

Its argv identifies it in ``/proc``: ``[sh, -c, SCRIPT, corral-node, <exit file>, ...]``;
the backend re-attaches to it by that after a restart.
"""

from __future__ import annotations

WRAPPER_SCRIPT = r"""
_corral_x=$1 _corral_cmd=$3 _corral_prep=$4
trap ':' TERM INT HUP
_corral_finish() { printf '%s\n' "$1" > "$_corral_x"; exit 0; }
cd "$2" || _corral_finish "exit 127"
if [ -n "$_corral_prep" ]; then
  ( set --; eval "$_corral_prep" ) >> "$7" 2>&1 < /dev/null
  _corral_rc=$?
  [ "$_corral_rc" -eq 0 ] || _corral_finish "prepare $_corral_rc"
fi
( set --; eval "$_corral_cmd" ) >> "$5" 2>> "$6" < /dev/null
_corral_finish "exit $?"
"""

#: argv[0] of the wrapper's script; with the exit file as $1 it identifies a node's process in /proc.
#: Arguments: exit file, working dir, command, prepare command, stdout, stderr, prepare log.
WRAPPER_NAME = "corral-node"


def parse_exit_file(text: str) -> tuple[str, int] | None:
    """``("exit", 0)`` or ``("prepare", 2)``; None while the file is incomplete."""
    if not text.endswith("\n"):
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] not in ("exit", "prepare"):
        return None
    try:
        return parts[0], int(parts[1])
    except ValueError:
        return None
