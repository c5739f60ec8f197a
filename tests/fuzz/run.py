"""The deeper fuzz run, by hand: `python -m tests.fuzz.run [--seconds N] [--seed S] [--target NAME ...]`.

Feeds every target in `targets.py` mutated seed inputs (tests/fuzz/corpus.py) and random bytes,
round-robin, until the time is up; mutations of inputs that were accepted are kept as new seeds
(a small, bounded pool), so the run digs past the first layer of refusals. An input that raises
anything but a clean refusal, or takes longer than --hang seconds, is written to
`fuzz-crashes/<target>-<n>.bin` and counted. Prints executions per target, crashes and the peak
RSS; exits 1 when anything crashed. The suite's own bounded run is tests/fuzz/test_fuzz.py.
"""
from __future__ import annotations

import argparse
import random
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from .corpus import SEEDS, mutate
from .targets import TARGETS

POOL_MAX = 200  # kept inputs per target


class Hang(Exception):
    pass


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Hang


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--hang", type=int, default=10, help="seconds one input may take")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS))
    ap.add_argument("--out", type=Path, default=Path("fuzz-crashes"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    names = args.target or sorted(TARGETS)
    pools = {n: list(SEEDS[n]) for n in names}
    runs = dict.fromkeys(names, 0)
    crashes = dict.fromkeys(names, 0)
    signal.signal(signal.SIGALRM, _alarm)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for name in names:
            pool = pools[name]
            data = (bytes(rng.randrange(256) for _ in range(rng.randrange(64))) if rng.random() < 0.05
                    else mutate(rng.choice(pool), rng, 8))
            signal.alarm(args.hang)
            try:
                TARGETS[name](data)
            except Exception as e:
                signal.alarm(0)
                crashes[name] += 1
                args.out.mkdir(exist_ok=True)
                path = args.out / f"{name}-{crashes[name]}.bin"
                path.write_bytes(data)
                print(f"CRASH {name}: {type(e).__name__}: {e} -> {path}", file=sys.stderr)
                traceback.print_exc(limit=3)
            else:
                signal.alarm(0)
                if len(pool) < POOL_MAX and rng.random() < 0.02:
                    pool.append(data)
            runs[name] += 1
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name in names:
        print(f"{name:16} {runs[name]:>9} executions  {crashes[name]} crashes")
    print(f"total {sum(runs.values())} executions in {args.seconds:g}s (seed {args.seed}); peak RSS {peak_mib:.0f} MiB")
    return 1 if any(crashes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
