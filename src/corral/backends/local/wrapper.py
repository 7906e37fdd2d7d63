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
the backend re-attaches to it by that after a restart.
"""

from __future__ import annotations

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
