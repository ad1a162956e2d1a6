"""The build screen under a flood of log lines: memory stays flat and keys stay responsive.

Target (issue 4): fed 50,000 log lines per second for 10 s, the wizard's build screen keeps its
memory flat (bounded tail) and handles a key press within 100 ms.

A writer process appends `@nix` build-log records to a build's raw log at the given rate, as a
real supervisor would; the real BuildScreen follows it in a headless Textual app while this
script presses a key every 0.25 s and samples the process's memory every second.

    python bench/build_screen.py [--rate 50000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from textual.app import App
from textual.binding import Binding

from llama_wizard.nix.build import BuildRecord, now_iso
from llama_wizard.screens.build import BuildScreen

WRITER = r"""
import json, sys, time
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
drv = "/nix/store/0xav2dbqsh9mhhjy08qmdch1sdkgrl5d-llama-cpp-rocm-gfx906-0.0.0.drv"
with open(path, "a", buffering=1 << 20) as log:
    log.write('@nix {"action":"start","fields":["%s","",1,1],"id":3,"level":3,'
              '"text":"","type":105}\n' % drv)
    started = time.monotonic(); written = 0
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        batch = []
        for n in range(written, due):
            text = "[%d/4300] Building HIP object ggml/fattn-%d.cu.o" % (n % 4300 + 1, n)
            batch.append('@nix {"action":"result","fields":' + json.dumps([text])
                         + ',"id":3,"type":101}\n')
        log.write("".join(batch)); log.flush(); written = due
        time.sleep(0.02)
print(written)
"""


class FloodScreen(BuildScreen):
    BINDINGS = [*BuildScreen.BINDINGS, Binding("k", "probe", "probe")]  # noqa: RUF012

    def __init__(self, record: BuildRecord) -> None:
        super().__init__(record)
        self.handled: list[float] = []

    def action_probe(self) -> None:
        self.handled.append(time.perf_counter())


class Host(App[None]):
    def __init__(self, screen: FloodScreen) -> None:
        super().__init__()
        self.flood = screen

    def on_mount(self) -> None:
        self.push_screen(self.flood)


async def run(rate: int, seconds: float) -> int:
    directory = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    raw = directory / "build.nixlog"
    raw.write_text("")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(raw), str(rate), str(seconds)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    record = BuildRecord(slug="flood", output="flood", argv=["nix", "build"],
                         directory=str(directory), raw_log=str(raw),
                         text_log=str(directory / "build.log"), started=now_iso(),
                         status="running", supervisor_pid=writer.pid,
                         supervisor_started=psutil.Process(writer.pid).create_time())  # fmt: skip
    record.save()
    screen = FloodScreen(record)
    app = Host(screen)
    me = psutil.Process()
    memory: list[int] = []
    latencies: list[float] = []
    async with app.run_test(size=(100, 30)) as pilot:
        started = time.monotonic()
        next_sample = started
        while time.monotonic() - started < seconds:
            if time.monotonic() >= next_sample:
                memory.append(me.memory_info().rss)
                next_sample += 1.0
            before = len(screen.handled)
            pressed = time.perf_counter()
            await pilot.press("k")
            while len(screen.handled) == before and time.perf_counter() - pressed < 5:
                await asyncio.sleep(0.001)
            if len(screen.handled) == before:
                screen.handled.append(pressed + 5)  # never handled: count it as 5 s
            latencies.append(screen.handled[-1] - pressed)
            await asyncio.sleep(0.25)
        written = int(writer.communicate()[0] or 0)
        record.status = "succeeded"
        record.save()
        await pilot.pause(0.5)
    worst, median = max(latencies), statistics.median(latencies)
    growth = (memory[-1] - memory[1]) / 2**20 if len(memory) > 2 else 0.0
    print(f"build screen: {written:,} lines in {seconds:g} s ({written / seconds:,.0f}/s)")
    print(f"  key latency: median {median * 1000:.1f} ms, worst {worst * 1000:.1f} ms "
          f"(target < 100 ms: {'met' if worst < 0.1 else 'MISSED'})")  # fmt: skip
    print("  memory (RSS MiB, one sample per second): "
          + ", ".join(f"{m / 2**20:.0f}" for m in memory))  # fmt: skip
    flat = growth < 20
    print(f"  growth after the first second: {growth:+.1f} MiB "
          f"(target flat, < 20 MiB: {'met' if flat else 'MISSED'})")  # fmt: skip
    return 0 if worst < 0.1 and flat else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    return asyncio.run(run(args.rate, args.seconds))


if __name__ == "__main__":
    raise SystemExit(main())
