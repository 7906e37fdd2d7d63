"""Data-parallel training with PyTorch DDP on scikit-learn's digits (CPU, gloo).

Started by Corral's ``pytorch`` toolkit (or by ``torchrun``): the process group
comes from the environment both give (``MASTER_ADDR``, ``RANK``, ...). Each rank
trains on its own shard of the training set; DDP averages the gradients. Rank 0
prints loss and accuracy every epoch and saves the model; every rank prints a
digest of its final parameters, which must be the same on all of them.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", default=os.environ.get("CORRAL_OUTPUT_MODEL", ""))
    args = parser.parse_args()

    dist.init_process_group(backend=os.environ.get("CORRAL_PYTORCH_BACKEND", "gloo"))
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print(f"rendezvous at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}, {world} processes", flush=True)
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=0
    )
    x_train = torch.tensor(x_train, dtype=torch.float32)[rank::world]  # this rank's shard
    y_train = torch.tensor(y_train)[rank::world]
    x_test, y_test = torch.tensor(x_test, dtype=torch.float32), torch.tensor(y_test)

    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    # Every rank takes the same number of steps (shards differ by at most one sample).
    steps = len(x_train) // args.batch_size
    losses = []
    samples = 0
    started = time.time()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(epoch))
        total = torch.zeros(1)
        for step in range(steps):
            batch = order[step * args.batch_size : (step + 1) * args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
            if epoch == 0 and step == 0:
                print(f"first_step_at={time.time():.6f}", flush=True)
            total += loss.detach()
            samples += len(batch)
        dist.all_reduce(total)
        mean_loss = total.item() / (steps * world)
        losses.append(mean_loss)
        with torch.no_grad():
            accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs} loss {mean_loss:.4f} accuracy {accuracy:.4f}", flush=True)
    elapsed = time.time() - started
    count = torch.tensor([float(samples)])
    dist.all_reduce(count)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.module.parameters()))
    print(f"params_sha256={digest.hexdigest()}", flush=True)
    if rank == 0:
        print(f"throughput={count.item() / elapsed:.1f} samples/s", flush=True)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            torch.save(model.module.state_dict(), out / "model.pt")
            metrics = {"losses": losses, "accuracy": accuracy, "world_size": world}
            (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    # Release everything that holds the process group (DDP's reducer) before destroying it, while the
    # interpreter is fully alive: torch 2.13's gloo threads otherwise sometimes abort the exit.
    del model, optimizer
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
