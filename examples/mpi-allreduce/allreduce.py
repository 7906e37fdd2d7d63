"""Sum each rank's number over MPI (mpi4py) and record what every rank saw.

Rank r contributes r + 1, so the sum over n ranks is n (n + 1) / 2. Every rank
writes ``rank-<r>.json`` to the output directory Corral gives it
(``CORRAL_OUTPUT_RESULT``, forwarded to every rank by mpirun).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from mpi4py import MPI


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    total = comm.allreduce(rank + 1, op=MPI.SUM)
    expected = size * (size + 1) // 2
    print(f"rank {rank}/{size} on {socket.gethostname()}: sum {total} (expected {expected})", flush=True)
    out = Path(os.environ["CORRAL_OUTPUT_RESULT"])
    seen = {k: v for k, v in os.environ.items() if k.startswith(("CORRAL_", "AZ_BATCHAI_"))}
    record = {"rank": rank, "size": size, "sum": total, "expected": expected, "environment": seen}
    (out / f"rank-{rank}.json").write_text(json.dumps(record, indent=1))
    if total != expected:
        raise SystemExit(f"rank {rank}: wrong sum {total}")


if __name__ == "__main__":
    main()
