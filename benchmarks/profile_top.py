"""The top of a py-spy profile: where a process's samples were, by function (self and total).

    python benchmarks/profile_top.py PROFILE [--top 25] [--thread NAME] [--under corral]

PROFILE is py-spy's ``--format raw`` output (``benchmarks/dispatch.py --profile``): one stack a line, frames
separated by ``;`` (outermost first), then a space and its count of samples. ``self`` is the share of samples
whose innermost frame is the function; ``total``, of those with the function anywhere in the stack.
With ``--under``, ``self`` goes to the innermost frame whose file path contains that text (time in libraries
charged to the project's caller).
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^)]*?)(?::\d+)?\)$")


def name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", default=None, help="only the samples of threads whose name holds this")
    parser.add_argument("--under", default=None, help="charge self time to the innermost frame in these files")
    args = parser.parse_args()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        # With --subprocesses py-spy puts the processes first (a child's after its parent's), then the thread.
        thread = " ".join(itertools.takewhile(lambda f: f.startswith(("thread", "process")), frames))
        if args.thread and args.thread not in thread:
            continue
        count = int(count_text)
        samples += count
        threads[thread] += count
        body = [f for f in frames if not f.startswith(("thread", "process"))]
        if not body:
            continue
        innermost = body[-1]
        if args.under:
            innermost = next((f for f in reversed(body) if args.under in f), innermost)
        own[name(innermost)] += count
        for seen in {name(f) for f in body}:
            total[seen] += count
    print(f"{samples} samples")
    for thread, count in threads.most_common(8):
        print(f"  {100 * count / samples:5.1f}%  {thread or '(no thread name)'}")
    print(f"\nself (top {args.top})")
    for func, count in own.most_common(args.top):
        print(f"  {100 * count / samples:5.1f}%  {func}")
    print(f"\ntotal (top {args.top})")
    for func, count in total.most_common(args.top):
        print(f"  {100 * count / samples:5.1f}%  {func}")


if __name__ == "__main__":
    main()
