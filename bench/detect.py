"""Detection speed: the median wall time of one detection.

Targets (issue 2): under 150 ms on a fixture tree without tools, and under timeout + 100 ms when
a tool hangs. Prints one line per case with the figure and whether it met its target.

    python bench/detect.py [--runs N] [--hang-timeout S]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.simulate import load_profile, materialize


def median_seconds(profile: dict, runs: int, timeout: float) -> float:
    with tempfile.TemporaryDirectory() as directory:
        machine = materialize(profile, directory)
        env = machine.env()
        detect(machine.root, timeout=timeout, env=env)  # warm the imports and caches
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            detect(machine.root, timeout=timeout, env=env)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--hang-timeout", type=float, default=1.0)
    args = parser.parse_args()
    ok = True

    for name in ("2x-mi50", "8x-mi50-32gb", "7900xtx-raphael-igpu"):
        try:
            profile = load_profile(name)
        except ValueError:
            continue
        profile["tools"] = {}
        seconds = median_seconds(profile, args.runs, timeout=10.0)
        met = seconds < 0.150
        ok &= met
        print(f"detect {name} (no tools): median {seconds * 1000:.1f} ms "
              f"(target < 150 ms: {'met' if met else 'MISSED'})")  # fmt: skip

    profile = load_profile("2x-mi50")
    profile["tools"] = {"rocminfo": [{"hang": True}], "nvidia-smi": [{"hang": True}]}
    seconds = median_seconds(profile, max(3, args.runs // 4), timeout=args.hang_timeout)
    limit = args.hang_timeout + 0.100
    met = seconds < limit
    ok &= met
    print(f"detect 2x-mi50 with hung rocminfo and nvidia-smi, timeout {args.hang_timeout:g} s: "
          f"median {seconds * 1000:.1f} ms (target < {limit * 1000:.0f} ms: "
          f"{'met' if met else 'MISSED'})")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
