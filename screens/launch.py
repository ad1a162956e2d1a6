"""Step 5, launch: run llama-completion with the person's prompt (or llama-server on a host and
port) with the plan's environment and flags, stream its output, show llama.cpp's own speed
figures (each request's, for the server) and when the server is up, stop it cleanly, and say
how it ended (tui.launch.describe_exit: a crash with the signal's name and what to try).
Above the command, llama.cpp's own word on the fit (the built output's llama-fit-params, asked
by a worker on mount through session.verify): its answer, and in bold when it disagrees with the
estimate; one dim line when it could not be asked. It never holds up running.

The program is started through tui.launch.LaunchedProcess, whose one long-lived launcher
thread forks it: the worker here lives only as long as one run, and the program's
parent-death signal (it dies with the wizard, even a `kill -9`ed one) belongs to the thread
that forked it.

Once llama-server is up, the worker sends it one short chat request (tui/first_request.py, on
a daemon thread it polls, abandoned when the server stops) and the answer and its speed
("First answer: ...") join the speed line; a refused request says why in the status line.

The fields go through the session's checks (session.set_launch) and the command shown is the
session's (session.launch_spec). A worker starts the program and reads its output; it posts
what happened, and the handlers here update the app on the UI thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Log, RadioSet, Static
from textual.worker import get_current_worker

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep, error_text, message_markup
from llama_wizard.tui.llamacpp_log import printable
from llama_wizard.tui.validate import PROGRAMS
from llama_wizard.tui.widgets import CommandText, GlyphRadioButton

if TYPE_CHECKING:
    from collections.abc import Callable

    from llama_wizard.tui.first_request import FirstAnswer, FirstRequestError
    from llama_wizard.tui.launch import ExitReport, LaunchedProcess, LaunchSpec, Timing


@dataclass
class Started(Message):
    process: LaunchedProcess
    command: str


@dataclass
class Output(Message):
    lines: list[str]
    timing: Timing
    listening: str | None = None  # llama-server said it is up (on this URL)


@dataclass
class FirstAnswered(Message):
    """llama-server's reply to the first request (or why there was none), for process `pid`."""

    pid: int
    answer: FirstAnswer | FirstRequestError


@dataclass
class Exited(Message):
    program: str
    returncode: int | None
    timing: Timing | None = None
    problem: str | None = None  # it could not start
    report: ExitReport | None = None  # how it ended


@dataclass
class LlamacppFit(Message):
    """llama.cpp's own answer (llama-fit-params) for the plan's model, as lines to show."""

    text: str
    kind: str = "agree"  # agree, disagree, or not-asked


@dataclass
class DevicesChecked(Message):
    """llama.cpp's own list of devices beside the plan (session.check_devices), as lines."""

    lines: list[str]
    ok: bool


# Each field, the keyword of session.set_launch it sets.
FIELDS = {"prompt": "prompt", "host": "host", "port": "port"}


class LaunchScreen(WizardStep):
    STEP = "launch"
    CSS_PATH = "launch.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("ctrl+s", "stop", "Stop", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.problems: dict[str, str] = {}  # field -> what is wrong with what it holds
        self.server_up = False  # llama-server has said it is listening (this run)
        self.devices_pending = False  # llama.cpp is being asked which devices it sees
        self.run_when_checked = False  # ctrl+r came while it was
        self.first_answer: str | None = None  # "First answer: ..." (this run)

    def compose(self) -> ComposeResult:
        choices = self.session.choices
        yield from self.compose_header()
        with RadioSet(id="program"):
            for program in PROGRAMS:
                yield GlyphRadioButton(program, value=program == choices.program, id=program)
        with Horizontal(classes="form-row", id="prompt-row"):
            yield Label("Prompt", classes="form-label")
            yield Input(value=choices.prompt, id="prompt")
        with Horizontal(classes="form-row", id="server-row"):
            yield Label("Listen on", classes="form-label")
            yield Input(value=choices.host, id="host")
            yield Input(value=str(choices.port), id="port", type="integer")
        yield Static("", id="llamacpp-fit", markup=False)
        yield CommandText(id="command")
        yield Static("ctrl+r runs it; ctrl+s stops it.", id="launch-status", markup=False)
        yield Static("", id="speed", markup=False)
        yield Log(id="launch-output", max_lines=2000)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        self._show_program_fields()
        self._preview()
        # The program is the step's choice: keys typed here never land in the prompt (which
        # Enter would run); Tab moves to the fields.
        self.query_one("#program", RadioSet).focus()
        plan = self.session.plan
        # On a simulated machine llama.cpp would see this machine's GPUs: not asked, no line.
        if plan is not None and plan.model is not None and not self.session.simulated:
            self.ask_llamacpp()
        if plan is not None and not self.session.simulated:
            self.devices_pending = True
            self.check_devices()

    @work(thread=True, exclusive=True, group="devices")
    def check_devices(self) -> None:
        """The built binary's --list-devices, matched to the chosen GPUs: a Vulkan launch gets
        its --device, and a build that does not see them is said before ctrl+r."""
        check = self.session.check_devices()
        # All is well and nothing to choose (a CPU build, masked ROCm/CUDA GPUs all seen): the
        # preview says enough; a notice would only cover the output.
        quiet = check is None or (check.ok and not check.device_arg)
        lines = [] if quiet or check is None else check.lines()
        lines += [f"note: {text}" for text in self.session.take_notes()]
        self.post_message(DevicesChecked(lines, check is None or check.ok))

    def on_devices_checked(self, message: DevicesChecked) -> None:
        self.devices_pending = False
        if not self.host.launch_running:
            self._preview()  # the command now names the devices (--device VulkanN)
        if message.lines:
            self.notify(
                "\n".join(message.lines),
                title="llama.cpp's devices",
                severity="information" if message.ok else "warning",
                timeout=6 if message.ok else 20,
                markup=False,
            )
        if self.run_when_checked:
            self.run_when_checked = False
            self.action_run()

    # -- llama.cpp's own word on the fit ----------------------------------------------------------

    @work(thread=True, exclusive=True, group="verify")
    def ask_llamacpp(self) -> None:
        """The plan's model, context and GPUs, asked of the built output's llama-fit-params
        (the build is done by this step): one subprocess that changes nothing."""
        from llama_wizard.tui.verify import VerifyError

        try:
            verdict, agreement = self.session.verify()
        except VerifyError as error:
            self.post_message(
                LlamacppFit(f"llama.cpp not asked: {error.message} {error.fix}", "not-asked")
            )
            return
        if agreement.agree:
            self.post_message(LlamacppFit(verdict.summary()))
            return
        self.post_message(
            LlamacppFit(
                f"{verdict.summary()}\n"
                f"llama.cpp and the estimate disagree: {agreement.explanation}",
                "disagree",
            )
        )

    def on_llamacpp_fit(self, message: LlamacppFit) -> None:
        line = self.query_one("#llamacpp-fit", Static)
        line.update(message.text)
        line.set_class(message.kind == "disagree", "disagree")
        line.set_class(message.kind == "not-asked", "not-asked")
        line.display = True

    # -- the fields -----------------------------------------------------------------------------

    def _preview(self) -> None:
        """The command that ctrl+r runs, before it runs."""
        if self.session.plan is None:
            self._say("There is no plan yet: go back to the Build step.")
            return
        if self.problems:  # a field holds a bad value: its problem, not a stale command
            self._command(f"⚠ {next(iter(self.problems.values()))}", "text")
            return
        try:
            spec = self.session.launch_spec(check_built=False)
        except ActionableError as error:
            self._say(error_text(error))
            return
        self._command(spec.shell_command())
        note = self.session.api_key_note() if self._program() == "llama-server" else None
        if note and not self.host.launch_running:
            from llama_wizard.tui.format import plain_text

            self._say(f"{plain_text(note)}\nctrl+r runs it; ctrl+s stops it.")

    def _command(self, text: str, language: str = "sh") -> None:
        self.query_one("#command", CommandText).show(text, language)

    @on(Input.Changed)
    def field_changed(self, event: Input.Changed) -> None:
        name = event.input.id
        if name not in FIELDS:
            return
        try:
            self.session.set_launch(**{FIELDS[name]: event.value})
        except ActionableError as error:
            self.problems[name] = f"{error.message} {error.fix}"
            self._say(f"⚠ {self.problems[name]}")
            self._preview()
            return
        self.problems.pop(name, None)
        if not self.host.launch_running:
            self._say(
                f"⚠ {next(iter(self.problems.values()))}"
                if self.problems
                else "ctrl+r runs it; ctrl+s stops it."
            )
        self._preview()

    def _program(self) -> str:
        pressed = self.query_one("#program", RadioSet).pressed_button
        return str(pressed.id) if pressed is not None else PROGRAMS[0]

    def _show_program_fields(self) -> None:
        server = self._program() == "llama-server"
        self.query_one("#prompt-row").display = not server
        self.query_one("#server-row").display = server

    @on(RadioSet.Changed, "#program")
    def program_changed(self) -> None:
        self.session.set_launch(program=self._program())
        self._show_program_fields()
        self._preview()

    @on(Input.Submitted, "#prompt")
    def prompt_submitted(self) -> None:
        self.action_run()

    # -- running --------------------------------------------------------------------------------

    def action_run(self) -> None:
        if self.host.launch_running:
            self.notify("It is running; ctrl+s stops it.", severity="warning")
            return
        if self.problems:
            self.notify(message_markup(next(iter(self.problems.values()))), severity="warning")
            return
        if self.session.plan is None:
            return
        if self.devices_pending:
            # A Vulkan launch needs the --device the check finds: it starts once that is known.
            self.run_when_checked = True
            self._say("Asking llama.cpp which devices it sees; it starts right after.")
            return
        try:
            spec = self.session.launch_spec()
        except ActionableError as error:
            self._say(error_text(error))
            return
        self.query_one("#launch-output", Log).clear()
        speed = self.query_one("#speed", Static)
        speed.update("")
        speed.display = False  # no empty row above the output
        self.first_answer = None
        self.host.launch_running = True  # until Exited: a second ctrl+r does not start another
        self.run_program(spec, dict(self.session.machine.env), self.session.server_url())

    @work(thread=True, exclusive=True, group="launch")
    def run_program(self, spec: LaunchSpec, env: dict[str, str], url: str | None = None) -> None:
        from llama_wizard.tui.first_request import FirstRequest, ask_server
        from llama_wizard.tui.launch import LaunchedProcess

        try:
            process = LaunchedProcess.start(spec, base_env=env)
        except ActionableError as error:
            self.post_message(Exited(spec.program, None, problem=error_text(error)))
            return
        except OSError as error:
            self.post_message(
                Exited(spec.program, None, problem=f"⚠ Could not start {spec.binary}: {error}")
            )
            return
        self.post_message(Started(process, spec.shell_command()))
        worker = get_current_worker()
        asking: FirstRequest | None = None
        asked = False
        while not process.finished and not worker.is_cancelled:
            lines = process.lines(timeout=0.1)
            if lines:
                texts = [text for _, text in lines]
                self.post_message(Output(texts, process.timing_now(), process.listening_url))
            if not asked and url and spec.program == "llama-server" and process.listening_url:
                asked = True
                asking = ask_server(spec, url, env)
            answer = asking.poll() if asking is not None else None
            if answer is not None:
                asking = None
                self.post_message(FirstAnswered(process.pid, answer))
        if asking is not None:
            asking.abandon()  # the server stopped before it answered
        if worker.is_cancelled:
            process.stop()
        lines = process.lines(timeout=0)
        self.post_message(Output([text for _, text in lines], process.timing_now()))
        report = process.exit_report()
        timing = process.timing_now()
        self.session.record_timing(timing, spec.program)  # measured speeds, for fit and Model
        self.post_message(Exited(spec.program, process.returncode, timing, report=report))

    def on_started(self, message: Started) -> None:
        self.host.launched = message.process
        self.server_up = False
        self._command(message.command)
        if message.process.spec.program == "llama-server":
            self._say(
                f"Starting llama-server on {self.session.server_url()} (loading the model)… "
                "ctrl+s stops it."
            )
        else:
            self._say("Running… ctrl+s stops it.")

    def on_output(self, message: Output) -> None:
        if message.lines:
            lines = [printable(line) for line in message.lines]
            self.query_one("#launch-output", Log).write_lines(lines)
        self._speed(message.timing)
        if message.listening and not self.server_up and self.host.launch_running:
            self.server_up = True
            self._say(f"llama-server is up: {self.session.server_url()} — ctrl+s stops it.")

    def on_first_answered(self, message: FirstAnswered) -> None:
        from llama_wizard.tui.first_request import FirstRequestError

        launched = self.host.launched
        if launched is None or launched.pid != message.pid or not self.host.launch_running:
            return  # an answer from a server that has stopped since
        answer = message.answer
        if isinstance(answer, FirstRequestError):
            self._say(
                f"llama-server is up: {self.session.server_url()} — ctrl+s stops it.\n"
                + error_text(answer)
            )
            return
        self.first_answer = answer.summary()
        self._speed(launched.timing_now())

    def on_exited(self, message: Exited) -> None:
        self.host.launch_running = False
        if message.problem:
            self._say(message.problem)
            return
        if message.timing is not None:
            self._speed(message.timing)
        report = message.report
        if report is None:
            self._say(f"{message.program} exited with status {message.returncode}.")
        elif report.failed:
            where = " (its last lines are in the log below)" if report.last_lines else ""
            self._say(f"⚠ {report.message}{where}" + (f"\n{report.fix}" if report.fix else ""))
        else:
            self._say(report.message)

    def _speed(self, timing: Timing) -> None:
        lines = [line for line in (timing.summary(), self.first_answer) if line]
        if lines:
            speed = self.query_one("#speed", Static)
            speed.update("\n".join(lines))
            speed.display = True

    def _say(self, text: str) -> None:
        self.query_one("#launch-status", Static).update(text)

    def leave(self, go_on: Callable[[], None]) -> None:
        """Going on stops a running llama.cpp (nothing runs on unseen): asked first."""
        launched = self.host.launched
        if not self.host.launch_running or launched is None or launched.returncode is not None:
            super().leave(go_on)
            return
        from llama_wizard.screens.dialogs import ConfirmScreen

        program = self.session.choices.program
        question = (
            f"**{program} is running.** Going on stops it. To keep a server running after the "
            "wizard, the Done step's `k` installs it as a service."
        )

        def answered(stop: bool | None) -> None:
            if stop:
                go_on()

        self.app.push_screen(ConfirmScreen(question, yes="Stop it and go on", no="Stay"), answered)

    def on_unmount(self) -> None:
        # Leaving the step cancels the worker, which stops the program: nothing runs on.
        self.host.launch_running = False

    def action_stop(self) -> None:
        launched = self.host.launched
        if launched is not None and launched.returncode is None:
            self.stop_program(launched)

    @work(thread=True, group="stop")
    def stop_program(self, launched: LaunchedProcess) -> None:
        launched.stop()
