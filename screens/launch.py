"""Step 5, launch: run llama-completion with the person's prompt (or llama-server on a host and
port) with the plan's environment and flags, stream its output, show llama.cpp's own speed
figures, and stop it cleanly."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, Label, Log, RadioButton, RadioSet, Static
from textual.worker import get_current_worker

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep

PROGRAMS = ("llama-completion", "llama-server")


class LaunchScreen(WizardStep):
    STEP = "launch"
    CSS_PATH = "launch.tcss"
    BINDINGS = [  # noqa: RUF012
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("ctrl+s", "stop", "Stop", priority=True),
    ]

    def compose(self) -> ComposeResult:
        settings = self.state.settings
        yield from self.compose_header()
        with RadioSet(id="program"):
            for program in PROGRAMS:
                yield RadioButton(program, value=program == settings.program, id=program)
        with Horizontal(classes="form-row", id="prompt-row"):
            yield Label("Prompt", classes="form-label")
            yield Input(value=settings.prompt, id="prompt")
        with Horizontal(classes="form-row", id="server-row"):
            yield Label("Listen on", classes="form-label")
            yield Input(value=settings.host, id="host")
            yield Input(value=str(settings.port), id="port", type="integer")
        yield Static("", id="command")
        yield Static("ctrl+r runs it; ctrl+s stops it.", id="launch-status")
        yield Static("", id="speed")
        yield Log(id="launch-output", max_lines=2000)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        self._show_program_fields()
        self._preview()
        self.query_one("#prompt", Input).focus()

    def _preview(self) -> None:
        """The command that ctrl+r runs, before it runs."""
        from llama_wizard.tui.launch import launch_spec

        state, settings = self.state, self.state.settings
        if state.plan is None:
            self._say("There is no plan yet: go back to the Build step.")
            return
        try:
            spec = launch_spec(
                state.plan,
                program=self._program(),
                prompt=self.query_one("#prompt", Input).value,
                n_predict=settings.n_predict,
                host=self.query_one("#host", Input).value or settings.host,
                port=settings.port,
                check_built=False,
            )
        except ActionableError as error:
            self._say(f"⚠ {error.message}\nFix: {error.fix}")
            return
        self.query_one("#command", Static).update(f"$ {spec.shell_command()}")

    @on(Input.Changed)
    def field_changed(self) -> None:
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
        self.state.settings.program = self._program()
        self._show_program_fields()
        self._preview()

    @on(Input.Submitted, "#prompt")
    def prompt_submitted(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        if self.state.launch_running:
            self.notify("It is running; ctrl+s stops it.", severity="warning")
            return
        settings = self.state.settings
        settings.prompt = self.query_one("#prompt", Input).value
        settings.host = self.query_one("#host", Input).value.strip() or "127.0.0.1"
        try:
            settings.port = int(self.query_one("#port", Input).value)
        except ValueError:
            self.notify("The port is a number, such as 8080.", severity="warning")
            return
        self.query_one("#launch-output", Log).clear()
        self.run_program()

    @work(thread=True, exclusive=True, group="launch")
    def run_program(self) -> None:
        from llama_wizard.tui.launch import LaunchedProcess, launch_spec

        state, settings = self.state, self.state.settings
        assert state.plan is not None
        try:
            spec = launch_spec(
                state.plan,
                program=settings.program,
                prompt=settings.prompt,
                n_predict=settings.n_predict,
                host=settings.host,
                port=settings.port,
            )
            process = LaunchedProcess.start(spec, base_env=state.machine.env)
        except ActionableError as error:
            self.app.call_from_thread(self._say, f"⚠ {error.message}\nFix: {error.fix}")
            return
        except OSError as error:
            self.app.call_from_thread(self._say, f"⚠ Could not start {spec.binary}: {error}")
            return
        state.launch_running = True
        self.wizard.launched = process
        self.app.call_from_thread(self._started, spec.shell_command(), settings)
        worker = get_current_worker()
        while not process.finished and not worker.is_cancelled:
            lines = process.lines(timeout=0.1)
            if lines:
                self.app.call_from_thread(self._output, [text for _, text in lines], process.timing)
        if worker.is_cancelled:
            process.stop()
        state.launch_running = False
        self.app.call_from_thread(self._output, [], process.timing)
        self.app.call_from_thread(
            self._say, f"{spec.program} exited with status {process.returncode}."
        )

    def _started(self, command: str, settings) -> None:
        self.query_one("#command", Static).update(f"$ {command}")
        if settings.program == "llama-server":
            self._say(f"Serving on http://{settings.host}:{settings.port} — ctrl+s stops it.")
        else:
            self._say("Running… ctrl+s stops it.")

    def _output(self, lines: list[str], timing) -> None:
        if lines:
            self.query_one("#launch-output", Log).write_lines(lines)
        speeds = []
        if timing.prompt_tokens_per_second:
            speeds.append(f"prompt {timing.prompt_tokens_per_second:.1f} tokens/s")
        if timing.generation_tokens_per_second:
            speeds.append(f"generation {timing.generation_tokens_per_second:.1f} tokens/s")
        if speeds:
            self.query_one("#speed", Static).update(" · ".join(speeds) + " (llama.cpp's figures)")

    def _say(self, text: str) -> None:
        self.query_one("#launch-status", Static).update(text)

    def action_stop(self) -> None:
        launched = self.wizard.launched
        if launched is not None and launched.returncode is None:
            self.stop_program(launched)

    @work(thread=True, group="stop")
    def stop_program(self, launched) -> None:
        launched.stop()
