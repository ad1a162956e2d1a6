"""How a running build looks in a terminal: Rich renderables shared by the CLI's live view and
the plain-text lines for logs and dumb terminals."""

from __future__ import annotations

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from llama_wizard.nix.events import BuildProgress, RunningBuild
from llama_wizard.tui.format import human_bytes


def clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


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


def progress_renderable(progress: BuildProgress, title: str, now: float, tail: int = 6) -> Group:
    heading = Text.assemble((title, "bold"), f"   elapsed {clock(progress.elapsed)}")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, min_width=11)
    grid.add_column(no_wrap=True, min_width=30)
    grid.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
    expected = max(progress.builds_expected, progress.builds_done)
    grid.add_row(
        "Derivations",
        _bar(progress.builds_done, expected),
        f"{progress.builds_done}/{expected} built, {progress.builds_running} running"
        + (f", {progress.builds_failed} failed" if progress.builds_failed else ""),
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
