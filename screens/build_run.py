"""Step 4, build run: build the plan's output with progress and its log; cancel, retry, skip
when this flake's build of it is already there, and reattach to a build started before (here
or from the CLI). Whether it is built is the session's answer (this flake + output).

Beside the build, the plan's model downloads from the Hugging Face Hub when it is not on this
machine yet (the session's download job: both are long waits, so they run at once), with its own
bar (bytes, rate, ETA) under the build. The step is left once the build is there and the
download has ended; a failed or stopped download may be left behind (d tries again; the launch
then lets llama.cpp fetch the model with -hf)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import ProgressBar, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.nix.build import BuildRecord
from llama_wizard.screens.base import WizardStep, error_text
from llama_wizard.screens.build import CSS as BUILD_CSS
from llama_wizard.screens.build import BuildView
from llama_wizard.tui.build_view import started_text


@dataclass
class BuildStarted(Message):
    record: BuildRecord | None = None
    problem: str | None = None


class BuildRunScreen(WizardStep):
    STEP = "build-run"
    CSS_PATH = BUILD_CSS
    CSS = """
    #download-area { height: auto; padding: 0 1; }
    #download-area.-none { display: none; }
    #download-bar { width: 1fr; }
    """
    BINDINGS = [  # noqa: RUF012
        Binding("c", "cancel", "Cancel build"),
        Binding("r", "rebuild", "Build again"),
        Binding("d", "download", "Download again", show=False),
        Binding("x", "stop_download", "Stop download", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.built: str | None = None
        self.starting = False

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Static("", id="build-status", markup=False)
        yield Vertical(id="build-area")
        with Vertical(id="download-area", classes="-none"):
            yield Static("", id="download-status", markup=False)
            yield ProgressBar(id="download-bar", show_eta=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        plan = self.session.plan
        if plan is None:
            self._status("There is no plan yet: go back to the Build step.")
            return
        self.start_download()
        self.set_interval(0.25, self.show_download)
        try:
            self.session.check_can_build()
            status = self.session.build_status()
        except ActionableError as error:
            self._status(error_text(error))
            return
        output = plan.build.output
        if status.state == "running" and status.record is not None:
            self._follow(status.record, reattached=True)
            return
        if status.state == "built":
            self.built = status.store_path
            self._status(
                f"{output} is already built: {self.built}\nctrl+n goes on; r builds again."
            )
            return
        self.start()

    def _status(self, text: str) -> None:
        self.query_one("#build-status", Static).update(text)

    def start(self) -> None:
        self.starting = True
        self._status("Starting the build…")
        self.start_build()

    @work(thread=True, exclusive=True, group="build-start")
    def start_build(self) -> None:
        from llama_wizard.nix.build import BuildAlreadyRunning, start_build
        from llama_wizard.tui.plan import state_dir

        plan = self.session.plan
        assert plan is not None
        build = plan.build
        try:
            record = start_build(
                build.build_argv,
                build.output,
                state_dir(),
                out_link=build.out_link,
                env=self.session.machine.env,
                name=build.build_name,
            )
        except BuildAlreadyRunning as error:
            record = error.record
        except ActionableError as error:
            self.post_message(BuildStarted(problem=error_text(error)))
            return
        except OSError as error:  # what check_can_build did not foresee (a disk gone full)
            self.post_message(BuildStarted(problem=f"⚠ The build could not start: {error}"))
            return
        self.post_message(BuildStarted(record))

    def on_build_started(self, message: BuildStarted) -> None:
        self.starting = False
        if message.record is None:
            self._status(message.problem or "The build could not start.")
            return
        self._follow(message.record)

    def _follow(self, record: BuildRecord, reattached: bool = False) -> None:
        self.host.build_running = True
        self.refresh_bindings()
        self.host.build_record = record  # what to re-attach to, if the wizard ends meanwhile
        area = self.query_one("#build-area", Vertical)
        area.remove_children()
        area.mount(BuildView(record))
        doing = (
            f"Reattached to the build of {record.output} started {started_text(record)}"
            if reattached
            else f"Building {record.output}"
        )
        self._status(f"{doing}; c cancels, escape leaves it running. Log: {record.text_log}")

    @on(BuildView.Finished)
    def finished(self, event: BuildView.Finished) -> None:
        self.host.build_running = False
        self.refresh_bindings()
        self.host.build_record = None
        record = event.record
        if record.status == "succeeded":
            self.built = record.out_paths[-1] if record.out_paths else "built"
            job = self.session.download_job
            # The step cannot be left while the model downloads (can_leave): say so here.
            waiting = job is not None and not job.done
            self._status("Built. ctrl+n goes on to the launch"
                         + (" once the model is here (below)." if waiting else "."))  # fmt: skip
        elif record.status == "cancelled":
            who = "You cancelled the build" if event.cancelled_here else "Build cancelled"
            self._status(f"{who}; the log is at {record.text_log}. r builds again.")
        elif record.status == "lost":
            self._status(
                f"The build process is gone without a result; the log is at {record.text_log}. "
                "r builds again."
            )
        else:
            self._status(f"The build failed; the log is at {record.text_log}. r tries again.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The footer offers what can be done now: cancelling only while a build runs.
        if action == "cancel":
            return self.host.build_running
        return super().check_action(action, parameters)

    def action_cancel(self) -> None:
        views = self.query(BuildView)
        if views:
            views.first().confirm_cancel()

    def action_rebuild(self) -> None:
        if self.host.build_running or self.starting:
            self.notify("A build is running already.", severity="warning")
            return
        if self.session.plan is None:
            return
        try:
            self.session.check_can_build()  # Nix may have been installed since; the state dir
        except ActionableError as error:
            self._status(error_text(error))
            return
        self.built = None
        self.start()

    # --- the model's download ---

    def start_download(self) -> None:
        """Start (or find again) the download of the plan's model; nothing when it is here."""
        try:
            self.session.start_download()
        except (ActionableError, OSError) as error:  # the cache cannot even be looked at
            self.notify(str(getattr(error, "message", error)), severity="error")
        self.show_download()

    def show_download(self) -> None:
        """The download's bar and line, from the job's state (read from its thread)."""
        from llama_wizard.models.download import format_bytes, format_eta

        job = self.session.download_job
        area = self.query_one("#download-area", Vertical)
        area.set_class(job is None, "-none")
        if job is None:
            return
        line = self.query_one("#download-status", Static)
        bar = self.query_one("#download-bar", ProgressBar)
        progress = job.progress
        spec = job.target.spec
        if job.result is not None:
            bar.update(total=max(job.result.bytes, 1), progress=max(job.result.bytes, 1))
            line.update(f"Model {spec}: here ({format_bytes(job.result.bytes)}), "
                        f"{job.result.path}")  # fmt: skip
        elif job.error is not None:
            line.update(
                error_text(job.error)
                + "\nd downloads again (it resumes); or go on: llama.cpp then downloads it "
                "when it starts."
            )
        elif progress is None:
            line.update(f"Downloading {spec}: asking the Hub…")
        else:
            bar.update(total=max(progress.total_bytes, 1), progress=progress.done_bytes)
            part = (
                f" part {progress.file_index}/{progress.file_count}"
                if progress.file_count > 1
                else ""
            )
            if progress.phase == "checking":
                detail = "checking the part downloaded before"
            else:
                rate = progress.bytes_per_second
                detail = (
                    f"{format_bytes(progress.done_bytes)} of {format_bytes(progress.total_bytes)}"
                )
                if rate:
                    detail += f" · {format_bytes(rate)}/s · {format_eta(progress.eta_seconds)} left"
            line.update(f"Downloading {spec}{part}: {detail} (x stops it)")

    def action_download(self) -> None:
        job = self.session.download_job
        if job is not None and not job.done:
            self.notify("The model is downloading already.", severity="warning")
            return
        self.start_download()

    def action_stop_download(self) -> None:
        job = self.session.download_job
        if job is not None and not job.done:
            self.session.stop_download()

    def can_leave(self) -> str | None:
        job = self.session.download_job
        if job is not None and not job.done:
            return "The model is still downloading (x stops it; d starts it again, resuming)."
        if self.built:
            return None
        if self.host.build_running or self.starting:
            return "The build is still running (escape goes back and leaves it running)."
        return "Build first (r), or come back once it is built."
