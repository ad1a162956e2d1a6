"""Start-up cost of a scripted command: `llama-wizard detect --json` as a whole process (the
installed console script, stdout to /dev/null) beside `python -c pass` with the same
interpreter, measured the same way in the same run.

Target: median within 2.5x of bare Python.

Both run with .pyc files written and read (PYTHONDONTWRITEBYTECODE is dropped from the child
environment: with it set, every run would compile every module again), after one warm-up run
each; then the runs alternate, so both see the same machine load. Detection runs on this
machine as it is (its /sys, its rocminfo and nvidia-smi, if any).

    python bench/cli_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_RATIO = 2.5


def run_seconds(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time, and CPU time (user + system; less disturbed by other load on the machine)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {process.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    wizard = Path(sys.executable).with_name("llama-wizard")
    if not wizard.exists():
        print(f"{wizard} is missing (pip install -e . in this environment)")
        return 2
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    commands = {
        "llama-wizard detect --json": [str(wizard), "detect", "--json"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    for command in commands.values():  # warm-up: writes the .pyc files, fills the page cache
        run_seconds(command, env)
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            seconds, cpu_seconds = run_seconds(command, env)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    medians = {name: statistics.median(times) for name, times in wall.items()}
    cpu_medians = {name: statistics.median(times) for name, times in cpu.items()}
    for name in commands:
        print(
            f"{name}: median {medians[name] * 1000:.1f} ms (min {min(wall[name]) * 1000:.1f}; "
            f"CPU time median {cpu_medians[name] * 1000:.1f} ms), {args.runs} runs"
        )
    wizard_name, bare_name = commands
    ratio = medians[wizard_name] / medians[bare_name]
    cpu_ratio = cpu_medians[wizard_name] / cpu_medians[bare_name]
    met = ratio <= TARGET_RATIO
    print(
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO:g}: {'met' if met else 'MISSED'}); "
        f"CPU time ratio {cpu_ratio:.2f}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
