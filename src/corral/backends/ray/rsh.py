"""``mpirun``'s remote shell on Ray: ``python -m corral.backends.ray.rsh HOST COMMAND...``.

OpenMPI starts its daemon on each other host through a remote shell (``plm_rsh_agent``: ssh by default; the
Kubeflow MPI operator used ``kubectl exec``). On a Ray cluster this is it: it asks the agent of its own machine,
over the agent's Unix socket (no Ray driver of its own: that cost 0.5 s a call), to run ``COMMAND`` through
``/bin/sh -c`` on ``HOST``'s agent, then copies the command's output to its own and exits with its exit code,
as ssh does. The daemon carries the job's ``CORRAL_RUN_ID``, so it ends with the job's attempt.

Protocol: one JSON line in (``{"host", "command", "run"}``), JSON lines out (``["stdout"|"stderr", text]``,
last ``["exit", code]``).
"""

from __future__ import annotations

import json
import os
import socket
import sys

#: The agent's socket on its machine, under the node base (the agent sets it in every job process).
SOCKET_VARIABLE = "CORRAL_AGENT_SOCKET"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python -m corral.backends.ray.rsh HOST COMMAND...", file=sys.stderr)
        return 255
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        print(f"corral rsh: {SOCKET_VARIABLE} is not set: run inside a Corral job on Ray", file=sys.stderr)
        return 255
    request = {"host": argv[1], "command": " ".join(argv[2:]), "run": os.environ.get("CORRAL_RUN_ID", "")}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(path)
        except OSError as exc:
            print(f"corral rsh: cannot reach the agent at {path}: {exc}", file=sys.stderr)
            return 255
        conn.sendall(json.dumps(request).encode() + b"\n")
        for raw in conn.makefile("rb"):
            stream, text = json.loads(raw)
            if stream == "exit":
                return int(text)
            out = sys.stdout if stream == "stdout" else sys.stderr
            print(text, file=out, flush=True)
    print(f"corral rsh: the agent ended the connection before {argv[1]}'s command ended", file=sys.stderr)
    return 255


if __name__ == "__main__":
    sys.exit(main(sys.argv))
