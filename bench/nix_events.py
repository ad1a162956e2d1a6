"""Event-parser throughput: `@nix` lines per second through BuildProgress.feed.

Target (issue 4): at least 200,000 lines per second on the CI machine.

    python bench/nix_events.py [--lines N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llama_wizard.nix.events import BuildProgress

TARGET = 200_000


def synthetic_stream(count: int) -> list[str]:
    """A compile-heavy stream like a llama.cpp ROCm build: mostly build log lines, with the
    progress and activity records Nix interleaves."""
    drv = "/nix/store/0xav2dbqsh9mhhjy08qmdch1sdkgrl5d-llama-cpp-rocm-gfx906-0.0.0.drv"
    lines = [
        '@nix {"action":"start","id":1,"level":0,"text":"","type":104}',
        '@nix {"action":"start","id":2,"level":0,"text":"","type":102}',
        f'@nix {{"action":"start","fields":["{drv}","",1,1],"id":3,"level":3,'
        f'"text":"building \'{drv}\'","type":105}}',
    ]
    for number in range(count - len(lines)):
        kind = number % 10
        if kind < 8:
            text = (f"[{number % 430 + 1}/430] Building HIP object ggml/src/ggml-cuda/CMakeFiles/"
                    f"ggml-cuda.dir/template-instances/fattn-vec-f16-{number}.cu.o")  # fmt: skip
            lines.append('@nix {"action":"result","fields":' + json.dumps([text])
                         + ',"id":3,"type":101}')  # fmt: skip
        elif kind == 8:
            lines.append('@nix {"action":"result","fields":[0,1,1,0],"id":1,"type":105}')
        else:
            lines.append('@nix {"action":"result","fields":[101,0],"id":2,"type":106}')
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    stream = synthetic_stream(args.lines)
    rates = []
    for _ in range(args.runs):
        progress = BuildProgress()
        started = time.perf_counter()
        for line in stream:
            progress.feed(line)
        rates.append(len(stream) / (time.perf_counter() - started))
    best = max(rates)
    median = sorted(rates)[len(rates) // 2]
    met = best >= TARGET
    print(f"nix event parser: {best:,.0f} lines/s best, {median:,.0f} median ({args.runs} x "
          f"{len(stream):,} lines; "
          f"target >= {TARGET:,}: {'met' if met else 'MISSED'})")  # fmt: skip
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
