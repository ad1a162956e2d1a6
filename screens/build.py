"""Following a nix build: progress bars, the running derivations and a bounded log tail.

The log is read and parsed in a thread worker; the view is updated at most ten times a second
with what changed, so even a build that prints 50,000 lines a second leaves the keys responsive
and the memory flat (the log widget keeps only its last lines). `BuildView` is the widget (the
wizard's build-run step composes it); `BuildScreen` shows one on its own."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, Log, ProgressBar, Static
from textual.worker import get_current_worker

from llama_wizard.nix.build import BuildRecord, follow, read_record, request_cancel
from llama_wizard.nix.diagnose import diagnose
from llama_wizard.nix.events import BuildProgress
from llama_wizard.tui.build_view import build_line, clock

LOG_LINES = 1000
REFRESH_SECONDS = 0.1
CSS = Path(__file__).with_name("build.tcss")


@dataclass
class BuildUpdate(Message):
    """What changed since the last update: new log lines (at most LOG_LINES) and the figures."""

    lines: list[str]
    done: int
    expected: int
    running: list[str]
    step: tuple[int, int] | None
    elapsed: float
    finished: BuildRecord | None = None
    report: list[str] = field(default_factory=list)


class BuildView(Vertical):
    """Follows one build from the start of its log."""

    @dataclass
    class Finished(Message):
        record: BuildRecord

    def __init__(self, record: BuildRecord, title: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record = record
        self.build_title = title or f"Building {record.output}"
        self.final: BuildRecord | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.build_title, id="build-title")
        with Horizontal(classes="bar-row"):
            yield Label("Derivations", classes="bar-label")
            yield ProgressBar(id="derivations", show_eta=False)
            yield Label("", id="derivations-detail", classes="bar-detail")
        with Horizontal(classes="bar-row"):
            yield Label("Compile", classes="bar-label")
            yield ProgressBar(id="compile", show_eta=False)
            yield Label("", id="compile-detail", classes="bar-detail")
        yield Static("", id="running")
        yield Log(id="build-log", max_lines=LOG_LINES, auto_scroll=True)
        yield Static("", id="build-result")

    def on_mount(self) -> None:
        self.follow_build()

    @work(thread=True, exclusive=True, group="build-follow")
    def follow_build(self) -> None:
        worker_progress = BuildProgress(tail_lines=LOG_LINES)
        logged = 0
        last_post = 0.0
        for batch in follow(self.record):
            for line in batch:
                worker_progress.feed(line)
            now = time.monotonic()
            if now - last_post >= REFRESH_SECONDS:
                logged = self._post(worker_progress, logged)
                last_post = now
            if get_current_worker().is_cancelled:  # leaving: stop reading, the build goes on
                return
        record = read_record(self.record)
        report: list[str] = []
        if record.status in ("failed", "lost"):
            failure = diagnose(worker_progress, record)
            if record.note:
                report.append(record.note)
            if failure.derivation:
                report.append(f"failing derivation: {failure.derivation}")
            if failure.cause:
                report.append(f"cause: {failure.cause.message} Fix: {failure.cause.fix}")
            report.append(f"full log: {failure.log_path}")
            if failure.nix_log_command:
                report.append(f"or: {failure.nix_log_command}")
        self._post(worker_progress, logged, finished=record, report=report)

    def _post(
        self,
        progress: BuildProgress,
        logged: int,
        finished: BuildRecord | None = None,
        report: list[str] | None = None,
    ) -> int:
        new = min(progress.lines_logged - logged, len(progress.tail))
        lines = [line.text for line in list(progress.tail)[-new:]] if new > 0 else []
        main = progress.main_build()
        now = time.monotonic()
        self.post_message(
            BuildUpdate(
                lines=lines,
                done=progress.builds_done,
                expected=max(progress.builds_expected, progress.builds_done),
                running=[build_line(b, now) for b in progress.running.values()],
                step=main.step if main else None,
                elapsed=progress.elapsed,
                finished=finished,
                report=report or [],
            )
        )
        return progress.lines_logged

    def on_build_update(self, update: BuildUpdate) -> None:
        update.stop()
        if update.lines:
            self.query_one("#build-log", Log).write_lines(update.lines)
        bar = self.query_one("#derivations", ProgressBar)
        bar.update(total=max(update.expected, 1), progress=update.done)
        self.query_one("#derivations-detail", Label).update(
            f"{update.done}/{update.expected} built · {clock(update.elapsed)}"
        )
        if update.step:
            self.query_one("#compile", ProgressBar).update(
                total=update.step[1], progress=update.step[0]
            )
            self.query_one("#compile-detail", Label).update(f"[{update.step[0]}/{update.step[1]}]")
        self.query_one("#running", Static).update("\n".join(f"⏵ {r}" for r in update.running))
        if update.finished is not None:
            self.final = update.finished
            status = update.finished.status
            lines = [f"Build {status}."]
            if status == "succeeded" and update.finished.out_paths:
                lines.append(update.finished.out_paths[-1])
            lines.extend(update.report)
            self.query_one("#build-result", Static).update("\n".join(lines))
            self.post_message(self.Finished(update.finished))

    def cancel(self) -> None:
        if self.final is None:
            request_cancel(read_record(self.record))
            self.query_one("#build-result", Static).update("Cancelling…")


class BuildScreen(Screen[BuildRecord | None]):
    """One build on its own screen: `c` cancels, `escape` leaves it running."""

    CSS_PATH = CSS
    BINDINGS = [  # noqa: RUF012 - Textual's declared class attribute
        Binding("c", "cancel", "Cancel build"),
        Binding("escape", "leave", "Back (build keeps running)"),
    ]

    def __init__(self, record: BuildRecord, title: str | None = None) -> None:
        super().__init__()
        self.record = record
        self.build_title = title

    def compose(self) -> ComposeResult:
        yield Header()
        yield BuildView(self.record, self.build_title, id="build-view")
        yield Footer()

    @property
    def view(self) -> BuildView:
        return self.query_one(BuildView)

    @property
    def final(self) -> BuildRecord | None:
        return self.view.final

    def action_cancel(self) -> None:
        self.view.cancel()

    def action_leave(self) -> None:
        self.dismiss(self.view.final)
