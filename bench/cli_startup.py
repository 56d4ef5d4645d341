"""What a command line costs before it does anything: CPU seconds of ``supportbot --help``,
``supportbot run --help`` and a usage error, each run N times as a fresh process.

    python -m bench.cli_startup [--runs 15]

Prints a table of the median and p90 CPU time (user + system, from the child's rusage) and wall
time. The goal (issue "The playground as a support agent would use it"): ``--help`` under 0.5 s
of CPU. The test that keeps the import graph light is ``tests/test_cli.py``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench._common import markdown_table, median, percentile

SUPPORTBOT = str(Path(sys.executable).parent / "supportbot")
COMMANDS = {
    "supportbot --help": ["--help"],
    "supportbot run --help": ["run", "--help"],
    "supportbot conversations --limit zero (usage error)": ["conversations", "--limit", "zero"],
}


def measure(args: list[str], runs: int) -> tuple[list[float], list[float]]:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([SUPPORTBOT, *args], capture_output=True, check=False, env={**os.environ})
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    rows = []
    for name, args in COMMANDS.items():
        cpu, wall = measure(args, options.runs)
        rows.append(
            [
                name,
                f"{median(cpu):.3f}",
                f"{percentile(cpu, 90):.3f}",
                f"{median(wall):.3f}",
                f"{percentile(wall, 90):.3f}",
            ]
        )
    print(markdown_table(["command", "CPU s p50", "CPU s p90", "wall s p50", "wall s p90"], rows))


if __name__ == "__main__":
    main()
