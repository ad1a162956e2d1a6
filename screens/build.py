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
from llama_wizard.tui.build_view import (
    build_line,
    clock,
    derivations_text,
    elapsed_seconds,
    status_sentence,
)

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


class FollowingLog(Log):
    """A Log that stays at its end until the person scrolls up, whatever happens to its size.

    Log's own auto_scroll follows only while the view is exactly at the end *before* a write;
    a resize (or a horizontal scrollbar appearing) moves the end away from the view without a
    scroll, and from then on it never follows again. Here whether to follow is decided by where
    the person left the view: it is updated on every scroll, not by a resize."""

    def __init__(self, **kwargs) -> None:
        super().__init__(auto_scroll=False, **kwargs)
        self.following = True

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # A scroll up by the person stops following; reaching the end again resumes it.
        # A resize that clamps the position lands on the end, so it never stops following.
        self.following = round(new_value) >= self.max_scroll_y

    def write_lines(self, lines, scroll_end: bool | None = None) -> FollowingLog:  # type: ignore[override]
        follow = self.following if scroll_end is None else scroll_end
        super().write_lines(lines, scroll_end=False)
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        return self

    def on_resize(self) -> None:
        if self.following:
            # After the new layout, when max_scroll_y is the new size's.
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)


class BuildView(Vertical):
    """Follows one build from the start of its log."""

    @dataclass
    class Finished(Message):
        record: BuildRecord
        cancelled_here: bool = False  # this view asked for the cancel (not another session)

    def __init__(self, record: BuildRecord, title: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record = record
        self.build_title = title or f"Building {record.output}"
        self.final: BuildRecord | None = None
        self.cancel_requested = False  # by this view (the status then says who cancelled)
        self.step: tuple[int, int] | None = None  # the last [N/M] seen
        self.elapsed = 0.0

    def compose(self) -> ComposeResult:
        yield Label(self.build_title, id="build-title")
        with Horizontal(classes="bar-row"):
            yield Label("Derivations", classes="bar-label")
            yield ProgressBar(id="derivations", show_eta=False)
            yield Label("", id="derivations-detail", classes="bar-detail")
        with Horizontal(classes="bar-row", id="compile-row"):
            yield Label("Compile", classes="bar-label")
            yield ProgressBar(id="compile", show_eta=False)
            yield Label("", id="compile-detail", classes="bar-detail")
        yield Static("", id="running")
        yield FollowingLog(id="build-log", max_lines=LOG_LINES)
        yield Static("", id="build-result")

    def on_mount(self) -> None:
        self.follow_build()

    @work(thread=True, exclusive=True, group="build-follow")
    def follow_build(self) -> None:
        # Elapsed time counts from the build's own start, also when this view re-attaches.
        worker_progress = BuildProgress(
            tail_lines=LOG_LINES, wall_started=self.record.started_timestamp
        )
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
            report.extend(failure.report_lines())  # Nix's error, the cause and fix, the log
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
        now = time.monotonic()
        elapsed = elapsed_seconds(finished) if finished is not None else None
        self.post_message(
            BuildUpdate(
                lines=lines,
                done=progress.builds_done,
                expected=max(progress.builds_expected, progress.builds_done),
                running=[build_line(b, now) for b in progress.running.values()],
                step=progress.compile_step(),
                elapsed=progress.elapsed if elapsed is None else elapsed,
                finished=finished,
                report=report or [],
            )
        )
        return progress.lines_logged

    def on_build_update(self, update: BuildUpdate) -> None:
        update.stop()
        if update.lines:
            self.query_one("#build-log", FollowingLog).write_lines(update.lines)
        finished = update.finished.status if update.finished is not None else None
        self.elapsed = update.elapsed
        bar = self.query_one("#derivations", ProgressBar)
        if finished == "succeeded" and update.expected == 0:
            bar.update(total=1, progress=1)  # already in the store: done, not 0%
        else:
            bar.update(total=max(update.expected, 1), progress=update.done)
        self.query_one("#derivations-detail", Label).update(
            f"{derivations_text(update.done, update.expected, finished)} · "
            f"{clock(update.elapsed)}"
        )
        compile_bar = self.query_one("#compile", ProgressBar)
        if update.step:
            self.step = update.step
            compile_bar.update(total=update.step[1], progress=update.step[0])
            self.query_one("#compile-detail", Label).update(f"[{update.step[0]}/{update.step[1]}]")
        self.query_one("#running", Static).update("\n".join(f"⏵ {r}" for r in update.running))
        if update.finished is not None:
            self._show_finished(update.finished, update.report)

    def _show_finished(self, record: BuildRecord, report: list[str]) -> None:
        """The end state is static: no bar keeps animating once the build is over."""
        self.final = record
        compile_bar = self.query_one("#compile", ProgressBar)
        if self.step is None:
            # No compile counter was ever seen (nothing compiled, or not a CMake build): the
            # row would only animate `--%` forever.
            self.query_one("#compile-row").display = False
        elif record.status == "succeeded":
            compile_bar.update(total=self.step[1], progress=self.step[1])
            self.query_one("#compile-detail", Label).update(f"[{self.step[1]}/{self.step[1]}]")
        self.query_one("#running", Static).update("")
        lines = [status_sentence(record.status)]
        if record.status == "succeeded" and record.out_paths:
            lines.append(record.out_paths[-1])
        lines.extend(report)
        self.query_one("#build-result", Static).update("\n".join(lines))
        self.post_message(self.Finished(record, self.cancel_requested))

    def cancel_question(self) -> str:
        """What cancelling loses, for the confirmation (Markdown)."""
        done = f" (its {self.step[0]} of {self.step[1]} compile steps)" if self.step else ""
        return (
            f"**Cancel the build of {self.record.output}?**\n\n"
            f"It has run for {clock(self.elapsed)}. Nix stops it now and throws away what it "
            f"has compiled so far{done}: nothing half-built is kept, so building again starts "
            "from the beginning.\n\n"
            f"The log is kept: `{self.record.text_log}`"
        )

    def confirm_cancel(self) -> None:
        """Cancel after a yes: one stray key must not throw away an hour of compiling."""
        if self.final is not None or self.cancel_requested:
            return
        from llama_wizard.screens.dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.cancel()

        self.app.push_screen(
            ConfirmScreen(self.cancel_question(), yes="Cancel the build", no="Keep building"),
            answered,
        )

    def cancel(self) -> None:
        if self.final is None:
            self.cancel_requested = True
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
        self.view.confirm_cancel()

    def action_leave(self) -> None:
        self.dismiss(self.view.final)
