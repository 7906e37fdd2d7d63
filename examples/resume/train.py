"""Deterministic training that survives preemption: checkpoint every K steps, resume from the last.

Fits y = 3x + 2 by stochastic gradient descent on data made from a fixed seed; the
batch of step s depends only on s, so an attempt that resumes from a checkpoint
continues exactly where the last one saved. On Corral's notice (SIGTERM, through
``corral.runtime``) it stops at the end of the current step without saving: the
next attempt redoes at most K steps. It prints each checkpoint and where it started,
and writes the final weights (``repr`` of floats: exact) to its output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from corral import runtime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50, help="K: steps between checkpoints")
    parser.add_argument("--step-seconds", type=float, default=0.01)
    parser.add_argument("--out", default=os.environ.get("CORRAL_OUTPUT_MODEL", "."))
    args = parser.parse_args()

    rng = random.Random(0)
    data = [(x, 3 * x + 2 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(256))]

    state = runtime.load_latest() or {"step": 0, "w": 0.0, "b": 0.0}
    print(f"attempt {os.environ.get('CORRAL_ATTEMPT', '?')} starts at step {state['step']}", flush=True)
    w, b = state["w"], state["b"]
    for step in range(state["step"], args.steps):
        batch = random.Random(step).sample(data, 16)
        grad_w = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
        grad_b = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
        w, b = w - 0.05 * grad_w, b - 0.05 * grad_b
        done = step + 1
        if done % args.every == 0:
            runtime.save({"step": done, "w": w, "b": b}, step=done)
            print(f"checkpoint at step {done}", flush=True)
        if runtime.preemption_requested():
            print(f"notice at step {done}: stopping", flush=True)
            runtime.exit_preempted()
        time.sleep(args.step_seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.json").write_text(json.dumps({"w": repr(w), "b": repr(b), "steps": args.steps}))
    print(f"done: w={w:.6f} b={b:.6f}", flush=True)


if __name__ == "__main__":
    main()
