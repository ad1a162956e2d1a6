"""Step 2, build: the recommended flake output with its reasons and environment, the
alternatives and why not, and the flake; the person can change the flake and the output.

Planning asks the flake (slow): a worker computes the plan (session.plan_outcome) and posts it;
the handler adopts it into the session on the UI thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from llama_wizard.detect.errors import ActionableError
from llama_wizard.screens.base import WizardStep, error_text, message_markup

if TYPE_CHECKING:
    from llama_wizard.tui.plan import Plan
    from llama_wizard.tui.session import PlanOutcome

RECOMMENDED = "__recommended__"


@dataclass
class Planned(Message):
    generation: int
    outcome: PlanOutcome | None = None
    error: ActionableError | None = None


class BuildChoiceScreen(WizardStep):
    STEP = "build"

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0  # bumped by every request: a late answer to an older one is dropped

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with Horizontal(classes="form-row"):
            yield Label("Flake", classes="form-label")
            yield Input(
                value=self.session.choices.flake or "",
                placeholder="this directory's llama.cpp flake, else github:ggml-org/llama.cpp",
                id="flake",
            )
        with Horizontal(classes="form-row"):
            yield Label("Output", classes="form-label")
            # Blank until the flake has answered: setting the value then redraws its label.
            yield Select[str]([], id="output-choice", prompt="asking the flake…")
        yield Static(self.session.asking_text(), id="plan-status", markup=False)
        # Shown only when Nix has no build-users group as root (session.setup_problem).
        offer = Button(
            "Run the wizard's nix commands without build users (as root)",
            id="nix-without-build-users",
        )
        offer.display = False
        yield offer
        with VerticalScroll(id="plan-view"):
            yield Static("", id="plan")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        super().on_mount()
        # The output is the step's choice; the flake field takes keys only when chosen (Tab).
        self.query_one("#output-choice", Select).focus()
        if self.session.inventory is None:
            self._status("The hardware is not detected yet: go back to the Hardware step.")
        elif self.session.plan is None:
            self.refresh_plan()
        else:
            self.show_plan(self.session.plan)

    def refresh_plan(self, status: str | None = None) -> None:
        self.generation += 1
        self._status(status or self.session.asking_text())
        self.compute_plan(self.generation)

    @work(thread=True, exclusive=True, group="plan")
    def compute_plan(self, generation: int) -> None:
        try:
            outcome = self.session.plan_outcome()
        except ActionableError as error:
            self.post_message(Planned(generation, error=error))
            return
        self.post_message(Planned(generation, outcome=outcome))

    def on_planned(self, message: Planned) -> None:
        if message.generation != self.generation:
            return  # the choices changed since this plan was asked for
        if message.outcome is None:
            assert message.error is not None
            self._status(error_text(message.error))
            self.query_one("#plan", Static).update("")
            return
        plan = self.session.adopt_plan(message.outcome)
        self.host.show_notes()
        self.show_plan(plan)

    def _status(self, text: str) -> None:
        self.query_one("#plan-status", Static).update(text)

    def show_plan(self, plan: Plan) -> None:
        from llama_wizard.tui.render import plan_renderable

        build = plan.build
        select = self.query_one("#output-choice", Select)
        recommended = build.recommended
        options = [(f"recommended: {recommended}", RECOMMENDED)]
        options += [(name, name) for name in plan.flake_outputs.packages]
        chosen = self.session.choices.output or RECOMMENDED
        values = {value for _, value in options}
        with select.prevent(Select.Changed):
            select.set_options(options)  # back to blank, so the value below always redraws
            select.value = chosen if chosen in values else RECOMMENDED
        what = build.output + (f" for {';'.join(build.rocm_targets)}" if build.rocm_targets else "")
        cached = " (outputs from cache)" if plan.flake_outputs.from_cache else ""
        status = f"Build {what} from {build.flake}{cached}"
        if any(w.code == "flake_unreachable" for w in plan.warnings):
            status += " (it could not be fetched: the outputs it is known to have are shown)"
        problem = self.session.setup_problem()
        offer = problem is not None and problem.wizard_can_apply
        self.query_one("#nix-without-build-users", Button).display = offer
        if problem is not None:
            status += "\n⚠ Nix cannot build here as it is set up: see the first warning below."
        self._status(status)
        self.query_one("#plan", Static).update(plan_renderable(plan, banner=False))

    @on(Button.Pressed, "#nix-without-build-users")
    def without_build_users(self) -> None:
        """The person agreed: the wizard's nix commands run with `build-users-group =`."""
        self.session.allow_nix_without_build_users()
        self.query_one("#nix-without-build-users", Button).display = False
        self.refresh_plan()

    @on(Input.Submitted, "#flake")
    def flake_changed(self, event: Input.Submitted) -> None:
        try:
            self.session.set_flake(event.value)
        except ActionableError as error:
            self.notify(message_markup(f"{error.message} {error.fix}"), severity="warning")
            return
        if self.session.plan is None:
            self.refresh_plan()

    @on(Select.Changed, "#output-choice")
    def output_changed(self, event: Select.Changed) -> None:
        if not event.select.has_focus:
            return  # set by show_plan (set_options resets the value), not by the person
        if event.value == Select.NULL:
            return
        value = None if event.value == RECOMMENDED else str(event.value)
        try:
            self.session.choose_output(value)
        except ActionableError as error:
            self.notify(message_markup(f"{error.message} {error.fix}"), severity="warning")
            return
        if self.session.plan is None:
            self.refresh_plan("Planning…")

    def can_leave(self) -> str | None:
        if self.session.plan is None:
            return "There is no build plan yet (see the message above)."
        return None
