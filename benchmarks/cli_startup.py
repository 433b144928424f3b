"""How long `medzoo --help` takes, against the floor of `python -c "import click"`, side by side.

Run: `make bench-startup` (or `.venv/bin/python benchmarks/cli_startup.py --runs 20`).
Prints the median of each and the ratio; the goal is `medzoo --help` under 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    medzoo = str(Path(sys.executable).parent / "medzoo")
    # Interleave warm-up so both see a warm page cache.
    timed([sys.executable, "-c", "import click"], 1)
    timed([medzoo, "--help"], 1)
    baseline = timed([sys.executable, "-c", "import click"], args.runs)
    cli = timed([medzoo, "--help"], args.runs)
    print(f"python -c 'import click': {baseline * 1000:7.1f} ms (median of {args.runs})")
    print(f"medzoo --help:            {cli * 1000:7.1f} ms (median of {args.runs})")
    print(
        f"ratio:                    {cli / baseline:7.2f}x   goal: medzoo --help < 500 ms -> {'met' if cli < 0.5 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
