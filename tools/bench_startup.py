"""Startup cost of the command line: wall seconds of a few cheap commands, each a fresh subprocess, median of N.

    python tools/bench_startup.py [--repeats 5]

Commands: `refine --help`, `python -c "import refine"`, `refine eval --help`, `refine bench --help`, and
for scale `python -c "import torch"` and `python -c "import fla.models"` (what a command that builds a model
pays on top). Prints one line per command: median, min, max seconds. Goal (issue 12): `refine --help` < 1 s.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time

log = logging.getLogger("bench_startup")


def commands() -> dict[str, list[str]]:
    refine = shutil.which("refine") or "refine"
    return {
        "refine --help": [refine, "--help"],
        "python -c 'import refine'": [sys.executable, "-c", "import refine"],
        "refine eval --help": [refine, "eval", "--help"],
        "refine bench --help": [refine, "bench", "--help"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import fla.models'": [sys.executable, "-c", "import refine, fla.models"],
    }


def time_command(argv: list[str], repeats: int) -> list[float]:
    times = []
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%-32s %8s %8s %8s", "command", "median_s", "min_s", "max_s")
    for name, argv in commands().items():
        times = time_command(argv, args.repeats)
        log.info("%-32s %8.2f %8.2f %8.2f", name, statistics.median(times), min(times), max(times))


if __name__ == "__main__":
    main()
