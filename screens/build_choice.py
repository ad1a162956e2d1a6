"""Step 2, build: the recommended flake output with its reasons and environment, the
alternatives and why not, and the flake; the person can change the flake and the output."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Select, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep
from llama_wizard.tui.plan import Plan
from llama_wizard.tui.render import plan_renderable

RECOMMENDED = "__recommended__"


class BuildChoiceScreen(WizardStep):
    STEP = "build"

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with Horizontal(classes="form-row"):
            yield Label("Flake", classes="form-label")
            yield Input(
                value=self.state.settings.flake or "",
                placeholder="this directory's llama.cpp flake, else github:ggml-org/llama.cpp",
                id="flake",
            )
        with Horizontal(classes="form-row"):
            yield Label("Output", classes="form-label")
            # Blank until the flake has answered: setting the value then redraws its label.
            yield Select[str]([], id="output-choice", prompt="asking the flake…")
        yield Static("Asking the flake what it offers…", id="plan-status")
        with VerticalScroll(id="plan-view"):
            yield Static("", id="plan")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        if self.state.plan is None:
            self.refresh_plan()
        else:
            self.show_plan(self.state.plan)

    @work(thread=True, exclusive=True, group="plan")
    def refresh_plan(self) -> None:
        try:
            plan = self.state.make_plan()
        except ActionableError as error:
            self.app.call_from_thread(self.show_error, error)
            return
        self.app.call_from_thread(self.show_plan, plan)

    def show_error(self, error: ActionableError) -> None:
        self.state.plan = None
        self.query_one("#plan-status", Static).update(f"⚠ {error.message}\nFix: {error.fix}")
        self.query_one("#plan", Static).update("")

    def show_plan(self, plan: Plan) -> None:
        build = plan.build
        select = self.query_one("#output-choice", Select)
        recommended = build.recommended_output or build.output
        options = [(f"recommended: {recommended}", RECOMMENDED)]
        options += [(name, name) for name in plan.flake_outputs.packages]
        chosen = self.state.settings.output or RECOMMENDED
        values = {value for _, value in options}
        with select.prevent(Select.Changed):
            select.set_options(options)  # back to blank, so the value below always redraws
            select.value = chosen if chosen in values else RECOMMENDED
        what = build.output + (f" for {';'.join(build.rocm_targets)}" if build.rocm_targets else "")
        cached = " (outputs from cache)" if plan.flake_outputs.from_cache else ""
        self.query_one("#plan-status", Static).update(f"Build {what} from {build.flake}{cached}")
        self.query_one("#plan", Static).update(plan_renderable(plan, banner=False))

    @on(Input.Submitted, "#flake")
    def flake_changed(self, event: Input.Submitted) -> None:
        self.state.settings.flake = event.value.strip() or None
        self.state.settings.output = None
        self.query_one("#plan-status", Static).update("Asking the flake what it offers…")
        self.refresh_plan()

    @on(Select.Changed, "#output-choice")
    def output_changed(self, event: Select.Changed) -> None:
        if not event.select.has_focus:
            return  # set by show_plan (set_options resets the value), not by the person
        if event.value == Select.NULL:
            return
        value = None if event.value == RECOMMENDED else str(event.value)
        if value == self.state.settings.output:
            return
        self.state.settings.output = value
        self.query_one("#plan-status", Static).update("Planning…")
        self.refresh_plan()

    def can_leave(self) -> str | None:
        if self.state.plan is None:
            return "There is no build plan yet (see the message above)."
        return None
