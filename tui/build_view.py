"""How a running build looks in a terminal: Rich renderables shared by the CLI's live view and
the plain-text lines for logs and dumb terminals."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from llama_wizard.nix.events import BuildProgress, RunningBuild
from llama_wizard.tui.format import human_bytes

if TYPE_CHECKING:
    from llama_wizard.nix.build import BuildRecord


def clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


def elapsed_seconds(record: BuildRecord, now: float | None = None) -> float | None:
    """How long the build has run: from the record's start (not from when this view began to
    follow it) to its end, or to now while it runs. None when the start is unreadable."""
    started = record.started_timestamp
    if started is None:
        return None
    end = record.ended_timestamp if record.finished else None
    if end is None:
        end = time.time() if now is None else now
    return max(0.0, end - started)


def started_text(record: BuildRecord, now: float | None = None) -> str:
    """When the build started, as a person reads it: `at 14:02:11` today, else with the date."""
    import datetime as dt

    started = record.started_timestamp
    if started is None:
        return record.started
    when = dt.datetime.fromtimestamp(started)
    today = dt.datetime.fromtimestamp(time.time() if now is None else now).date()
    if when.date() == today:
        return f"at {when:%H:%M:%S}"
    return f"on {when:%Y-%m-%d} at {when:%H:%M}"


# How a finished build's state reads, as a sentence (the record's status is a bare word).
STATUS_SENTENCES = {
    "succeeded": "Build succeeded.",
    "failed": "Build failed.",
    "cancelled": "Build cancelled.",
    "lost": "Build lost: its process is gone without a result.",
}


def status_sentence(status: str) -> str:
    return STATUS_SENTENCES.get(status, f"Build {status}.")


def derivations_text(done: int, expected: int, finished: str | None = None) -> str:
    """`3/5 built`; a build with nothing to build says why rather than `0/0`: the output is
    already in the Nix store (finished), or Nix is still working out what to build."""
    if expected == 0 and done == 0:
        if finished == "succeeded":
            return "already in the Nix store: nothing to build"
        if finished is None:
            return "evaluating: working out what to build"
        return "nothing built"
    return f"{done}/{expected} built"


def _bar(done: int, total: int, width: int = 30) -> ProgressBar:
    return ProgressBar(total=max(total, 1), completed=min(done, max(total, 1)), width=width)


def build_line(build: RunningBuild, now: float) -> str:
    parts = [build.name]
    if build.phase:
        parts.append(build.phase)
    if build.step:
        parts.append(f"[{build.step[0]}/{build.step[1]}]")
    parts.append(clock(now - build.started))
    return "  ".join(parts)


def progress_renderable(
    progress: BuildProgress,
    title: str,
    now: float,
    tail: int = 6,
    finished: str | None = None,
) -> Group:
    """`finished`: the record's final status once the build has ended (the bars then say so)."""
    heading = Text.assemble((title, "bold"), f"   elapsed {clock(progress.elapsed)}")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, min_width=11)
    grid.add_column(no_wrap=True, min_width=30)
    grid.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
    expected = max(progress.builds_expected, progress.builds_done)
    nothing_to_build = finished == "succeeded" and expected == 0
    detail = derivations_text(progress.builds_done, expected, finished)
    if progress.builds_running and finished is None:
        detail += f", {progress.builds_running} running"
    if progress.builds_failed:
        detail += f", {progress.builds_failed} failed"
    grid.add_row(
        "Derivations",
        _bar(1, 1) if nothing_to_build else _bar(progress.builds_done, expected),
        detail,
    )
    if progress.download_bytes_expected or progress.substitutions_expected:
        grid.add_row(
            "Downloads",
            _bar(progress.download_bytes_done, progress.download_bytes_expected),
            f"{human_bytes(progress.download_bytes_done)} / "
            f"{human_bytes(progress.download_bytes_expected)}, "
            f"{progress.substitutions_done}/{progress.substitutions_expected} paths",
        )
    for build in progress.running.values():
        if build.step:
            grid.add_row(
                Text("⏵ compile", style="yellow"),
                _bar(build.step[0], build.step[1]),
                build_line(build, now),
            )
        else:
            grid.add_row(Text("⏵ build", style="yellow"), "", build_line(build, now))
    lines = [line.text for line in list(progress.tail)[-tail:]]
    log = Text("\n".join(lines), style="dim", no_wrap=True, overflow="ellipsis")
    return Group(heading, grid, log)


def plain_status(progress: BuildProgress) -> str:
    """One line for a terminal without cursor control: `[01:12] 2/5 built; llama-cpp [40/430]`."""
    parts = [f"[{clock(progress.elapsed)}]"]
    expected = max(progress.builds_expected, progress.builds_done)
    parts.append(f"{progress.builds_done}/{expected} built")
    main = progress.main_build()
    if main is not None:
        detail = main.name
        if main.phase:
            detail += f" ({main.phase})"
        if main.step:
            detail += f" [{main.step[0]}/{main.step[1]}]"
        parts.append(detail)
    return "; ".join(parts)
