"""The tiny shell wrapper every node's work runs under.

It is ``/bin/sh`` rather than Python because it runs once per node per job and
its start-up cost is the floor of Corral's dispatch latency. It:

1. creates the node's directories (one ``mkdir -p``: directory creation is slow
   enough on some disks that doing it in the server's control loop halved its
   throughput) and writes its pid to ``<control dir>/pid`` (the backend
   re-attaches to it after a restart);
2. runs ``prepare.command`` (output to the prepare log) and stops there if it fails;
3. runs the job's command in the working directory, stdout/stderr straight to files;
4. writes ``exit <code>`` (or ``prepare <code>``) to ``exit.tmp`` and renames it to ``exit``,
   so a reader never sees half a file.

SIGTERM sent to the process group reaches the user's processes; the wrapper
traps it so that it outlives them and records their true exit code.
"""

from __future__ import annotations

WRAPPER_SCRIPT = r"""
d=$1; wd=$2; cmd=$3; prep=$4; out=$5; err=$6; plog=$7
shift 7
mkdir -p "$d" "$wd" "$@" || exit 126
echo $$ > "$d/pid"
trap ':' TERM INT HUP
finish() { printf '%s\n' "$1" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"; exit 0; }
cd "$wd" || finish "exit 127"
if [ -n "$prep" ]; then
  /bin/sh -c "$prep" >> "$plog" 2>&1 < /dev/null
  rc=$?
  [ "$rc" -eq 0 ] || finish "prepare $rc"
fi
/bin/sh -c "$cmd" >> "$out" 2>> "$err" < /dev/null
finish "exit $?"
"""

#: argv[0] of the wrapper; with the control dir as $1 it identifies a node's process in /proc.
#: Arguments: control dir, working dir, command, prepare command, stdout, stderr, prepare log,
#: then any further directories to create.
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
