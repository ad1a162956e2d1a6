"""Plain mode (`llama-wizard --plain`, and what a dumb terminal gets) and scripted mode
(`llama-wizard --yes`): the wizard's six steps as line-by-line prompts.

One flow (`PlainWizard`) asks its questions through a `Prompter`, of which there are three:

- `QuestionaryPrompter`: arrow-key menus (questionary) on a real terminal;
- `LinePrompter`: numbered choices read with `input()`, defaults in brackets, for TERM=dumb,
  serial consoles and anything that is not a terminal (prompt_toolkit misrenders there and asks
  the terminal for its cursor position, which a dumb one never answers);
- `AutoPrompter`: takes every default without asking (`--yes`), so it needs no stdin at all.

Each step prints what it knows, then offers a menu whose first entry (the default) goes on
with the preselected choice: the saved one (tui.settings) when there is one, else the
recommendation. Every menu has "Back" (except the first step's) and "Quit". Choices are saved
after each step; `--reset` forgets them.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.model import Gpu, Inventory
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.options import is_dumb_terminal
from llama_wizard.tui.settings import Settings

STEPS = ("Hardware", "Build", "Model", "Build run", "Launch", "Done")
BACK = "__back__"
QUIT = "__quit__"
OTHER = "__other__"
EXIT_QUIT, EXIT_FAILED, EXIT_NO_INPUT, EXIT_INTERRUPTED = 0, 1, 1, 130


class Quit(Exception):
    """The person chose Quit (or stdin ran out): leave the flow with this exit status."""

    def __init__(self, code: int = EXIT_QUIT, message: str | None = None) -> None:
        super().__init__(message or "quit")
        self.code = code
        self.message = message


class StepFailed(ActionableError):
    """A step failed with nobody to ask (`--yes`): the flow ends with exit status 1."""


class NoInput(Quit):
    def __init__(self) -> None:
        super().__init__(
            EXIT_NO_INPUT,
            "No more input on stdin, so the wizard stops here. To run without questions use "
            "`llama-wizard --yes`.",
        )


# --- asking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    title: str
    value: Any
    disabled: str | None = None  # why it cannot be chosen


def _default_index(options: Sequence[Option], default: Any) -> int:
    for index, option in enumerate(options):
        if option.value == default and option.disabled is None:
            return index
    return next((i for i, o in enumerate(options) if o.disabled is None), 0)


class Prompter:
    """How the flow asks. `interactive` is False when nobody answers (`--yes`)."""

    interactive = True

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        raise NotImplementedError

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        raise NotImplementedError

    def confirm(self, message: str, default: bool = False) -> bool:
        raise NotImplementedError

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        """validate returns why an answer is not acceptable, or None."""
        raise NotImplementedError


class LinePrompter(Prompter):
    """Numbered choices read a line at a time: works on any terminal, or none."""

    def __init__(self, out: IO[str] | None = None, read: Callable[[str], str] = input) -> None:
        self.out = out
        self.read = read

    def _print(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def _ask(self, prompt: str) -> str:
        (self.out or sys.stdout).flush()
        try:
            return self.read(prompt)
        except EOFError:
            self._print()
            raise NoInput() from None

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        self._print(message)
        for number, option in enumerate(options, 1):
            why = f"  (not available: {option.disabled})" if option.disabled else ""
            self._print(f"  {number}) {option.title}{why}")
        chosen = _default_index(options, default) + 1
        shortcuts = {"b": BACK, "back": BACK, "q": QUIT, "quit": QUIT}
        values = [o.value for o in options]
        while True:
            answer = self._ask(f"Choose 1-{len(options)} [{chosen}]: ").strip().lower()
            if not answer:
                return options[chosen - 1].value
            if answer in shortcuts and shortcuts[answer] in values:
                return shortcuts[answer]
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                option = options[int(answer) - 1]
                if option.disabled is None:
                    return option.value
                self._print(f"{option.title} cannot be chosen: {option.disabled}")
                continue
            self._print(f"Type a number from 1 to {len(options)}, or press Enter for {chosen}.")

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        self._print(message)
        for number, option in enumerate(options, 1):
            mark = "x" if option.value in default else " "
            self._print(f"  {number}) [{mark}] {option.title}")
        numbers = [str(i) for i, o in enumerate(options, 1) if o.value in default]
        shown = ",".join(numbers) or "none"
        while True:
            answer = self._ask(f"Numbers separated by commas, or none [{shown}]: ").strip()
            if not answer:
                return [o.value for o in options if o.value in default]
            if answer.lower() == "none":
                return []
            parts = [p.strip() for p in answer.replace(" ", ",").split(",") if p.strip()]
            if all(p.isdigit() and 1 <= int(p) <= len(options) for p in parts):
                picked = {int(p) for p in parts}
                return [o.value for i, o in enumerate(options, 1) if i in picked]
            self._print(f"Type numbers from 1 to {len(options)} separated by commas, or none.")

    def confirm(self, message: str, default: bool = False) -> bool:
        hint = "Y/n" if default else "y/N"
        while True:
            answer = self._ask(f"{message} [{hint}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes"):
                return True
            if answer in ("n", "no"):
                return False
            self._print("Answer y or n.")

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        while True:
            shown = f" [{default}]" if default else ""
            answer = self._ask(f"{message}{shown}: ").strip() or default
            problem = validate(answer) if validate else None
            if problem is None:
                return answer
            self._print(problem)


class AutoPrompter(Prompter):
    """`--yes`: every question answered with its default, which is printed."""

    interactive = False

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        option = options[_default_index(options, default)]
        self._print(f"{message} → {option.title}")
        return option.value

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        return [o.value for o in options if o.value in default]

    def confirm(self, message: str, default: bool = False) -> bool:
        self._print(f"{message} → {'yes' if default else 'no'}")
        return default

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        self._print(f"{message} → {default}")
        return default


def questionary_style():
    """Readable on any colour scheme (and without colours): the terminal's own foreground."""
    from questionary import Style

    return Style(
        [
            ("qmark", "fg:ansidefault bold"),
            ("question", "fg:ansidefault bold"),
            ("answer", "fg:ansidefault bold"),
            ("pointer", "fg:ansidefault bold"),
            ("highlighted", "fg:ansidefault bold reverse"),
            ("selected", "fg:ansidefault"),
            ("separator", "fg:ansidefault"),
            ("instruction", "fg:ansidefault italic"),
            ("text", "fg:ansidefault"),
            ("disabled", "fg:ansidefault italic"),
        ]
    )


class QuestionaryPrompter(Prompter):
    """Arrow-key menus on a real terminal. `unsafe_ask()` lets Ctrl-C through to the one
    handler around the flow; Ctrl-D (EOF) quits like the line prompter's end of input."""

    def __init__(self) -> None:
        self.style = questionary_style()

    def _ask(self, question: Any) -> Any:
        try:
            return question.unsafe_ask()
        except EOFError:
            raise NoInput() from None

    def select(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        import questionary

        choices = [
            questionary.Choice(o.title, value=i, disabled=o.disabled) for i, o in enumerate(options)
        ]
        index = self._ask(
            questionary.select(
                message,
                choices,
                default=_default_index(options, default),
                style=self.style,
                instruction="(arrows, Enter)",
            )
        )
        return options[index].value

    def checkbox(self, message: str, options: Sequence[Option], default: Sequence[Any]) -> list:
        import questionary

        choices = [
            questionary.Choice(o.title, value=i, checked=o.value in default)
            for i, o in enumerate(options)
        ]
        picked = self._ask(
            questionary.checkbox(
                message, choices, style=self.style, instruction="(Space toggles, Enter accepts)"
            )
        )
        return [options[i].value for i in picked]

    def confirm(self, message: str, default: bool = False) -> bool:
        import questionary

        return bool(self._ask(questionary.confirm(message, default=default, style=self.style)))

    def text(
        self,
        message: str,
        default: str = "",
        validate: Callable[[str], str | None] | None = None,
    ) -> str:
        import questionary

        def check(answer: str) -> bool | str:
            problem = validate(answer.strip()) if validate else None
            return True if problem is None else problem

        answer = self._ask(
            questionary.text(message, default=default, validate=check, style=self.style)
        )
        return str(answer).strip()


def choose_prompter(yes: bool) -> Prompter:
    if yes:
        return AutoPrompter()
    if sys.stdin.isatty() and sys.stdout.isatty() and not is_dumb_terminal():
        return QuestionaryPrompter()
    return LinePrompter()


# --- the flow --------------------------------------------------------------------------------


def _gpu_words(indices: Sequence[int]) -> str:
    if not indices:
        return "no GPU (the CPU)"
    return ("GPU " if len(indices) == 1 else "GPUs ") + ", ".join(str(i) for i in indices)


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / (1 << 30):.1f} GiB"


def _positive_int(low: int, high: int | None = None) -> Callable[[str], str | None]:
    def check(answer: str) -> str | None:
        if not answer.isdigit() or int(answer) < low or (high is not None and int(answer) > high):
            upper = f" and {high}" if high is not None else " or more"
            return f"Type a whole number, {low}{upper}."
        return None

    return check


def _not_empty(answer: str) -> str | None:
    return None if answer.strip() else "Type something (or press Ctrl-C to quit)."


class PlainWizard:
    """The six steps, each a method that returns "next" or BACK (or raises Quit/StepFailed)."""

    def __init__(
        self,
        machine: Machine,
        prompter: Prompter,
        settings: Settings,
        *,
        flake: str | None = None,
        gpus: list[int] | None = None,
        model: str | None = None,
        quant: str | None = None,
        ctx: int | None = None,
        timeout: float = 10.0,
        console: Console | None = None,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        build_mode: str = "plain",
    ) -> None:
        self.machine = machine
        self.prompter = prompter
        self.settings = settings
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.console = console or Console(file=self.out)
        self.timeout = timeout
        self.build_mode = build_mode
        # What is chosen so far; None means "the recommendation".
        self.flake = flake or settings.flake
        self.gpus = gpus if gpus is not None else settings.gpus
        same_flake = flake is None or _same_flake(flake, settings.flake)
        self.output = settings.output if same_flake and gpus is None else None
        self.model_spec = model or settings.model
        self.named = (model, quant, ctx)  # asked for on the command line: never dropped
        self.quant = quant or (settings.quant if model is None else None)
        self.ctx = ctx or (settings.ctx if model is None else None)
        self.inventory: Inventory | None = None
        self.plan: Any = None
        self.spec: Any = None  # the last LaunchSpec run (for the Done step's commands)
        self.process: Any = None  # the last LaunchedProcess

    # --- output helpers ---

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def header(self, number: int) -> None:
        simulated = self.machine.simulated
        mark = f"   [SIMULATED: {simulated}]" if simulated else ""
        title = f"Step {number}/{len(STEPS)}: {STEPS[number - 1]}"
        self.say()
        self.say(f"== {title} =={mark}")

    def problem(self, error: ActionableError) -> None:
        self.say(f"problem: {error.message}")
        self.say(f"fix: {error.fix}")

    def fail_or_ask(self, error: ActionableError, options: list[Option]) -> Any:
        """Show the error; with nobody to ask, the flow fails with it."""
        self.problem(error)
        if not self.prompter.interactive:
            raise StepFailed(error.message, error.fix)
        return self.ask("What now?", options, options[0].value)

    def ask(self, message: str, options: Sequence[Option], default: Any = None) -> Any:
        answer = self.prompter.select(message, options, default)
        if answer == QUIT:
            raise Quit(EXIT_QUIT)
        return answer

    def save(self) -> None:
        try:
            self.settings.save()
        except OSError as error:
            self.say(f"note: the choices could not be saved ({error}); they apply to this run.")

    # --- the run ---

    def run(self) -> int:
        steps: list[Callable[[], str]] = [
            self.step_hardware,
            self.step_build,
            self.step_model,
            self.step_build_run,
            self.step_launch,
            self.step_done,
        ]
        for note in self.settings.notes:
            self.say(f"note: {note}")
        index = 0
        while index < len(steps):
            result = steps[index]()
            index = max(0, index - 1) if result == BACK else index + 1
        return 0

    # --- step 1: hardware ---

    def detect(self) -> Inventory:
        if self.inventory is None:
            self.say("Detecting the GPUs, CPU and RAM…")
            self.inventory = self.machine.detect(self.timeout)
        return self.inventory

    def recommended_gpus(self) -> list[int]:
        from llama_wizard.nix.recommend import default_gpus

        return [g.index for g in default_gpus(self.detect())[0]]

    def step_hardware(self) -> str:
        from llama_wizard.tui.render import gpu_architecture, gpu_memory, print_inventory

        self.header(1)
        inventory = self.detect()
        print_inventory(inventory, self.console)
        recommended = self.recommended_gpus()
        known = {g.index for g in inventory.gpus}
        if self.gpus is not None and not set(self.gpus) <= known:
            self.say(
                f"note: the saved choice of {_gpu_words(self.gpus)} does not match this "
                "machine; using the recommendation."
            )
            self.gpus = None
        current = list(self.gpus) if self.gpus is not None else recommended
        if not inventory.gpus:
            self.say("No GPU to choose: llama.cpp will run on the CPU.")
        while True:
            note = " (recommended)" if sorted(current) == sorted(recommended) else ""
            options = [Option(f"Use {_gpu_words(current)}{note}", "use")]
            if inventory.gpus:
                options.append(Option("Choose other GPUs", "choose"))
            options.append(Option("Quit", QUIT))
            answer = self.ask("Which GPUs should llama.cpp use?", options, "use")
            if answer == "use":
                break
            choices = [
                Option(
                    f"GPU {g.index}: {g.name} ({gpu_architecture(g)}, {gpu_memory(g)})"
                    + ("" if g.index in recommended else " - not recommended"),
                    g.index,
                )
                for g in inventory.gpus
            ]
            current = self.prompter.checkbox(
                "GPUs to use (none: the CPU)", choices, default=current
            )
        chosen = None if sorted(current) == sorted(recommended) else current
        previous = self.gpus if self.gpus is not None else recommended
        if sorted(current) != sorted(previous):
            self.output = None  # another set of GPUs: the build is chosen afresh
        self.gpus = chosen
        self.settings.gpus = chosen
        self.save()
        return "next"

    # --- step 2: the build ---

    def make_plan(self) -> Any:
        """The plan for the choices so far. A saved choice that no longer works (an output this
        flake lacks, a model that no longer fits) is dropped with a note."""
        from llama_wizard.models.errors import ModelError
        from llama_wizard.nix.recommend import ChoiceError
        from llama_wizard.tui.plan import make_plan

        while True:
            try:
                plan = make_plan(
                    self.machine,
                    self.detect(),
                    flake_ref=self.flake,
                    output=self.output,
                    gpu_indices=self.gpus,
                    model=self.model_spec,
                    quant=self.quant,
                    ctx=self.ctx,
                )
            except ChoiceError as error:
                if self.output is None:
                    raise
                self.say(f"note: {error.message} Using the recommended build instead.")
                self.output = None
                continue
            except ModelError as error:
                if not self.saved_model_choice():
                    raise
                self.say(f"note: {error.message} Using the recommended model instead.")
                self.model_spec = self.quant = self.ctx = None
                continue
            if plan.model is None and self.saved_model_choice():
                self.say(
                    "note: the saved model choice does not fit these GPUs; using the "
                    "recommendation instead."
                )
                self.model_spec = self.quant = self.ctx = None
                continue
            return plan

    def saved_model_choice(self) -> bool:
        """Whether the model, quant or context come from saved settings (which may be dropped
        when they no longer work), not from the command line."""
        chosen = (self.model_spec, self.quant, self.ctx)
        return any(chosen) and chosen != self.named

    def step_build(self) -> str:
        from llama_wizard.tui.render import print_plan

        self.header(2)
        while True:
            try:
                self.plan = self.make_plan()
                break
            except ActionableError as error:
                answer = self.fail_or_ask(
                    error,
                    [
                        Option("Use another flake", "flake"),
                        Option("Back", BACK),
                        Option("Quit", QUIT),
                    ],
                )
                if answer == BACK:
                    return BACK
                self.ask_flake()
                self.output = None
        print_plan(self.plan, self.console)
        while True:
            build = self.plan.build
            recommended = build.recommended_output or build.output
            if build.output == recommended:
                what = f"Build {build.output} (recommended)"
            else:
                what = f"Build {build.output} (your choice; recommended: {recommended})"
            options = [
                Option(what, "use"),
                Option("Choose another flake output", "output"),
                Option(f"Use another flake (now {build.flake})", "flake"),
                Option("Back", BACK),
                Option("Quit", QUIT),
            ]
            answer = self.ask("Which build?", options, "use")
            if answer == BACK:
                return BACK
            if answer == "use":
                break
            if answer == "output":
                self.choose_output()
            else:
                previous = self.flake, self.output
                self.ask_flake()
                self.output = None
                try:
                    self.plan = self.make_plan()
                except ActionableError as error:
                    self.problem(error)
                    self.flake, self.output = previous
                    continue
                print_plan(self.plan, self.console)
        self.settings.flake = self.flake
        self.settings.output = self.output
        self.save()
        return "next"

    def choose_output(self) -> None:
        from llama_wizard.nix.catalogue import describe

        build = self.plan.build
        recommended = build.recommended_output or build.output
        packages = self.plan.flake_outputs.packages or [build.output]

        def option(name: str) -> Option:
            info = describe(name)
            title = name + (f" - {info.description}" if info else "")
            return Option(title + (" (recommended)" if name == recommended else ""), name)

        # Builds to run here first; the MPI, Windows, Python and Docker outputs one level down.
        others = [n for n in packages if (info := describe(n)) and not info.default_choice]
        options = [option(name) for name in packages if name not in others]
        if others:
            options.append(Option("Other outputs (MPI, Windows, Python scripts, Docker)", OTHER))
        name = self.prompter.select("Flake output to build", options, build.output)
        if name == OTHER:
            name = self.prompter.select("Flake output to build", [option(n) for n in others])
        previous = self.output
        self.output = None if name == recommended else name
        try:
            self.plan = self.make_plan()
        except ActionableError as error:
            self.problem(error)
            self.output = previous
            return
        build = self.plan.build
        self.say(f"Build: {build.output}   ({shlex.join(build.build_argv)})")
        if build.costs:
            self.say("What this choice costs:")
            for cost in build.costs:
                self.say(f"  • {cost}")
        elif build.output != recommended:
            self.say(f"The recommendation stays {recommended}.")

    def ask_flake(self) -> None:
        from llama_wizard.nix.flake import default_flake_ref

        current = self.plan.build.flake if self.plan is not None else None
        self.flake = self.prompter.text(
            "Flake reference (a path, or e.g. github:ggml-org/llama.cpp)",
            default=current or self.flake or default_flake_ref(),
            validate=_not_empty,
        )

    # --- step 3: the model ---

    def chosen_gpus(self) -> list[Gpu]:
        inventory = self.detect()
        return [g for g in inventory.gpus if g.index in self.plan.build.gpus]

    def step_model(self) -> str:
        from llama_wizard.models.choose import devices_for

        self.header(3)
        # The chosen GPUs' memory; with none, the RAM the CPU build runs in.
        devices = devices_for(self.chosen_gpus(), self.detect())
        if not devices:
            self.say(
                "There is no memory to fit a model into (no GPU chosen, and the RAM is "
                "unknown); name a model on the command line (llama-wizard run --model ...)."
            )
            answer = self.ask(
                "Go on?",
                [
                    Option("Go on without a model", "use"),
                    Option("Back", BACK),
                    Option("Quit", QUIT),
                ],
                "use",
            )
            return BACK if answer == BACK else "next"
        recommendation = self.recommendation(devices)
        choice = self.plan.model
        while True:
            self.show_models(devices, choice)
            if choice is None:
                at = f" at a {self.ctx}-token context" if self.ctx else ""
                if self.model_spec:
                    message = f"{self.model_spec} does not fit these GPUs{at}."
                else:
                    message = f"No model of the catalogue fits these GPUs{at}."
                message += " Choose a smaller model, quant or context."
                if not self.prompter.interactive:
                    raise StepFailed(
                        message,
                        "Name a model that fits: llama-wizard --yes "
                        "--model owner/repo:QUANT --ctx N (`llama-wizard fit "
                        "MODEL` says what fits).",
                    )
                self.say(message)
                use = Option("Use this model", "use", disabled="nothing fits")
            else:
                ours = recommendation is not None and (choice.repo, choice.quant, choice.ctx) == (
                    recommendation.repo,
                    recommendation.quant,
                    recommendation.ctx,
                )
                use = Option(
                    f"Use {choice.name} {choice.quant} at {choice.ctx} tokens"
                    + (" (recommended)" if ours else ""),
                    "use",
                )
            ctx = choice.ctx if choice else (self.ctx or 32768)
            options = [
                use,
                Option("Choose another model", "model"),
                Option("Choose another quant", "quant", None if choice else "no model chosen"),
                Option(f"Change the context size (now {ctx})", "ctx"),
                Option("Back", BACK),
                Option("Quit", QUIT),
            ]
            answer = self.ask("Which model?", options, "use")
            if answer == BACK:
                return BACK
            if answer == "use":
                break
            if answer == "model":
                choice = self.choose_model(devices, ctx) or choice
            elif answer == "quant" and choice is not None:
                choice = self.choose_quant(devices, choice)
            elif answer == "ctx":
                choice = self.change_ctx(devices, choice, ctx)
        self.plan.model = choice
        same = recommendation is not None and (choice.repo, choice.quant, choice.ctx) == (
            recommendation.repo,
            recommendation.quant,
            recommendation.ctx,
        )
        if same:
            self.model_spec = self.quant = self.ctx = None
        else:
            self.model_spec, self.quant, self.ctx = choice.repo, choice.quant, choice.ctx
        self.settings.model, self.settings.quant, self.settings.ctx = (
            self.model_spec,
            self.quant,
            self.ctx,
        )
        self.save()
        return "next"

    def recommendation(self, devices: list) -> Any:
        from llama_wizard.models.choose import recommend

        return recommend(devices, host_memory_bytes=self.host_memory())

    def host_memory(self) -> int | None:
        return self.detect().memory_available_bytes or None

    def fit(self, spec: str, devices: list, ctx: int | None) -> Any:
        from llama_wizard.models.choose import fit_model
        from llama_wizard.models.source import resolve_model

        return fit_model(resolve_model(spec), devices, ctx, host_memory_bytes=self.host_memory())

    def show_models(self, devices: list, choice: Any) -> None:
        from llama_wizard.models.catalogue import load_catalogue
        from llama_wizard.models.choose import fit_model
        from llama_wizard.models.source import from_catalogue

        ctx = choice.ctx if choice is not None else (self.ctx or 32768)
        memory = sum(d.memory_bytes for d in devices)
        table = Table(
            title=f"Models (best quant for {_gib(memory)} at {ctx} tokens)", title_justify="left"
        )
        table.add_column("Model")
        table.add_column("Size", no_wrap=True)
        table.add_column("Best fit", no_wrap=True)
        for model in load_catalogue().models:
            report = fit_model(
                from_catalogue(model, model.repo, None),
                devices,
                ctx,
                host_memory_bytes=self.host_memory(),
            )
            best = _best_quant(report)
            verdict = "does not fit" if best is None else f"{best.quant} {best.verdict}"
            mark = "> " if choice is not None and choice.repo == model.repo else "  "
            table.add_row(mark + model.name, model.size_class, verdict)
        self.console.print(table)
        if choice is None:
            return
        report = self.fit(choice.repo, devices, choice.ctx)
        quants = Table(
            title=f"{choice.name}: quants at a {choice.ctx}-token context", title_justify="left"
        )
        for column in ("Quant", "File", "Needs", "Free", "Fits", "Max ctx"):
            quants.add_column(
                column, no_wrap=True, justify="left" if column in ("Quant", "Fits") else "right"
            )
        for estimate in report.quants:
            mark = "> " if estimate.quant == choice.quant else "  "
            quants.add_row(
                mark + estimate.quant,
                _gib(estimate.file_bytes),
                _gib(estimate.total_bytes),
                _gib(estimate.free_bytes),
                estimate.verdict,
                str(estimate.max_ctx or "-"),
            )
        self.console.print(quants)
        for reason in choice.reasons:
            self.say(f"  • {reason}")

    def choose_model(self, devices: list, ctx: int) -> Any:
        from llama_wizard.models.catalogue import load_catalogue
        from llama_wizard.models.choose import fit_model, recommend
        from llama_wizard.models.errors import ModelError
        from llama_wizard.models.source import from_catalogue

        options = []
        for model in load_catalogue().models:
            report = fit_model(
                from_catalogue(model, model.repo, None),
                devices,
                ctx,
                host_memory_bytes=self.host_memory(),
            )
            best = _best_quant(report)
            why = None if best else f"nothing fits at {ctx} tokens"
            options.append(Option(f"{model.name} ({model.size_class})", model.repo, why))
        options.append(Option("Another model: a .gguf path, a URL or a Hub repo", "other"))
        current = self.plan.model.repo if self.plan.model is not None else None
        spec = self.prompter.select("Model", options, current)
        if spec == "other":
            spec = self.prompter.text(
                "Model (a .gguf path, an https:// URL or owner/repo[:QUANT])", validate=_not_empty
            )
        try:
            choice = recommend(devices, model=spec, ctx=ctx, host_memory_bytes=self.host_memory())
        except ModelError as error:
            self.problem(error)
            return None
        if choice is None:
            self.say(f"No quant of {spec} fits at a {ctx}-token context.")
        return choice

    def choose_quant(self, devices: list, choice: Any) -> Any:
        from llama_wizard.models.choose import choice_from_report

        report = self.fit(choice.repo, devices, choice.ctx)
        options = [
            Option(
                f"{e.quant}: {_gib(e.total_bytes)} of {_gib(e.memory_bytes)}, {e.verdict}",
                i,
                None if e.verdict != "no" else "does not fit",
            )
            for i, e in enumerate(report.quants)
        ]
        current = next((i for i, e in enumerate(report.quants) if e.quant == choice.quant), 0)
        index = self.prompter.select("Quant", options, current)
        if report.quants[index].quant == choice.quant:
            return choice
        return choice_from_report(report, index)

    def change_ctx(self, devices: list, choice: Any, ctx: int) -> Any:
        from llama_wizard.models.choose import choice_from_report, recommend

        answer = self.prompter.text(
            "Context size in tokens", default=str(ctx), validate=_positive_int(256, 1 << 21)
        )
        new_ctx = int(answer)
        if choice is None:
            self.ctx = new_ctx
            found = recommend(devices, ctx=new_ctx, host_memory_bytes=self.host_memory())
            if found is None:
                self.say(f"Still nothing fits at {new_ctx} tokens.")
            return found
        report = self.fit(choice.repo, devices, new_ctx)
        index = next(i for i, e in enumerate(report.quants) if e.quant == choice.quant)
        if report.quants[index].verdict != "no":
            return choice_from_report(report, index)
        found = recommend(
            devices, model=choice.repo, ctx=new_ctx, host_memory_bytes=self.host_memory()
        )
        if found is None:
            self.say(
                f"No quant of {choice.name} fits at {new_ctx} tokens; the context stays "
                f"{choice.ctx}."
            )
            return choice
        self.say(f"{choice.quant} does not fit at {new_ctx} tokens; {found.quant} does.")
        return found

    # --- step 4: the build run ---

    def build_name(self) -> str:
        return Path(self.plan.build.out_link).name.removeprefix("result-")

    def step_build_run(self) -> str:
        from llama_wizard.nix.build import find_build
        from llama_wizard.tui.build_cli import run_build
        from llama_wizard.tui.plan import state_dir

        self.header(4)
        build = self.plan.build
        name = self.build_name()
        while True:
            running = find_build(state_dir(), name)
            running = running if running is not None and not running.finished else None
            built = _built_path(build.out_link)
            if running is not None:
                self.say(
                    f"A build of {name} is already running (pid {running.supervisor_pid}); "
                    "following it."
                )
                answer = "build"
            elif built is not None:
                self.say(f"{build.output} is already built: {build.out_link} -> {built}")
                answer = self.ask(
                    "Build it again?",
                    [
                        Option("Go on with it", "next"),
                        Option("Build it again", "build"),
                        Option("Back", BACK),
                        Option("Quit", QUIT),
                    ],
                    "next",
                )
            else:
                self.say(f"$ {self.plan.shell_command()}")
                answer = self.ask(
                    "Build it now?",
                    [
                        Option(f"Build {build.output} now", "build"),
                        Option("Back", BACK),
                        Option("Quit", QUIT),
                    ],
                    "build",
                )
            if answer in (BACK, "next"):
                return answer
            if self.plan.nix is None:
                warning = next(w for w in self.plan.warnings if w.code == "nix_missing")
                answer = self.fail_or_ask(
                    ActionableError(warning.message, warning.fix),
                    [Option("Check again", "again"), Option("Back", BACK), Option("Quit", QUIT)],
                )
                if answer == BACK:
                    return BACK
                try:
                    self.plan = self.make_plan()
                except ActionableError as error:
                    self.problem(error)
                build = self.plan.build
                continue
            for cost in build.costs:
                self.say(f"note: {cost}")
            if running is None and built is None:
                self.say("Ctrl-C cancels the build (its log is kept).")
            code = run_build(
                build.build_argv,
                name,
                state_dir(),
                out_link=build.out_link,
                mode=self.build_mode,
                env=self.machine.env,
                out=self.out,
                err=self.err,
            )
            if code == 0:
                return "next"
            what = "was cancelled" if code == 130 else "failed"
            answer = self.fail_or_ask(
                ActionableError(
                    f"The build of {build.output} {what} (see above).",
                    "Read the log named above, fix the cause, and build again; "
                    "or go back and choose another build.",
                ),
                [Option("Build again", "again"), Option("Back", BACK), Option("Quit", QUIT)],
            )
            if answer == BACK:
                return BACK

    # --- step 5: the launch ---

    def step_launch(self) -> str:
        from llama_wizard.tui.launch import server_url

        self.header(5)
        settings = self.settings
        default = "completion" if settings.program != "llama-server" else "server"
        if not self.prompter.interactive:
            default = "completion"
        ran = False
        while True:
            options = [
                Option("Run llama-completion with a prompt", "completion"),
                Option(f"Run llama-server on {server_url(settings.host, settings.port)}", "server"),
                Option("Go on to the commands", "next"),
                Option("Back", BACK),
                Option("Quit", QUIT),
            ]
            answer = self.ask("Launch what?", options, "next" if ran else default)
            if answer in (BACK, "next"):
                return answer
            if answer == "completion":
                prompt = self.prompter.text("Prompt", default=settings.prompt, validate=_not_empty)
                settings.program, settings.prompt = "llama-completion", prompt
            else:
                host = self.prompter.text(
                    "Host to listen on", default=settings.host, validate=_not_empty
                )
                port = self.prompter.text(
                    "Port", default=str(settings.port), validate=_positive_int(1, 65535)
                )
                settings.program, settings.host, settings.port = "llama-server", host, int(port)
            self.save()
            code = self.launch(settings.program)
            ran = True
            if code != 0 and not self.prompter.interactive:
                raise StepFailed(
                    f"{settings.program} exited with status {code}.",
                    "Read its output above; `llama-wizard --plain` lets you change the model, "
                    "quant or context.",
                )

    def make_spec(self, program: str) -> Any:
        from llama_wizard.tui.launch import launch_spec

        settings = self.settings
        return launch_spec(
            self.plan,
            program=program,
            prompt=settings.prompt,
            n_predict=settings.n_predict,
            host=settings.host,
            port=settings.port,
        )

    def launch(self, program: str) -> int:
        """Run the program, its output streamed, until it ends or Ctrl-C stops it. Returns its
        exit status (0 when it was stopped on purpose)."""
        from llama_wizard.tui.launch import LaunchedProcess, exit_status, server_url

        try:
            spec = self.make_spec(program)
            process = LaunchedProcess.start(spec, base_env=self.machine.env)
        except ActionableError as error:
            if not self.prompter.interactive:
                raise StepFailed(error.message, error.fix) from None
            self.problem(error)
            return 1
        self.spec, self.process = spec, process
        if self.machine.simulated:
            self.say(
                f"note: the machine is SIMULATED ({self.machine.simulated}); the program "
                "runs here, on this machine's hardware."
            )
        self.say(f"$ {spec.shell_command()}")
        if program == "llama-server":
            url = server_url(self.settings.host, self.settings.port)
            self.say(f"llama-server listens on {url}; Ctrl-C stops it.")
        else:
            self.say("Ctrl-C stops it.")
        stopped = False
        try:
            while not process.finished:
                for _stream, line in process.lines(timeout=0.2):
                    self.say(line)
        except KeyboardInterrupt:
            stopped = True
            self.say(f"\nstopping {program}… (Ctrl-C again kills it)")
            try:
                process.stop()
            except KeyboardInterrupt:
                process.stop(grace=0)
        finally:
            process.stop()
            for _stream, line in process.lines(timeout=0):
                self.say(line)
        code = exit_status(process.returncode or 0)
        timing = process.timing
        rates = (timing.prompt_tokens_per_second, timing.generation_tokens_per_second)
        if any(rate is not None for rate in rates):
            self.say(
                f"speed: prompt {_rate(timing.prompt_tokens_per_second)}, "
                f"generation {_rate(timing.generation_tokens_per_second)}"
            )
        if stopped:
            self.say(f"{program} stopped.")
            return 0
        self.say(f"{program} exited with status {code}.")
        return code

    # --- step 6: done ---

    def step_done(self) -> str:
        from llama_wizard.tui import commands as commands_module

        self.header(6)
        commands = None
        spec = self.spec
        try:
            if spec is None:
                spec = self.make_spec(self.settings.program)
            commands = commands_module.commands_for(self.plan, spec)
        except ActionableError as error:
            self.problem(error)
            commands = [commands_module.build_command(self.plan)]
        if commands:
            for command in commands:
                self.say()
                self.say(f"# {command.title}")
                self.say(command.text.rstrip("\n"))
            self.say()
        while True:
            options = [Option("Finish", "finish")]
            if commands:
                options.append(Option("Save these commands to a file", "save"))
            options += [Option("Back", BACK), Option("Quit", QUIT)]
            answer = self.ask("Done. What now?", options, "finish")
            if answer in (BACK, "finish"):
                return answer if answer == BACK else "next"
            self.save_commands(commands_module, commands)

    def save_commands(self, commands_module: Any, commands: list) -> None:
        path = Path(
            self.prompter.text(
                "Save to", default=str(Path.cwd() / DEFAULT_SAVE_NAME), validate=_not_empty
            )
        ).expanduser()
        overwrite = False
        if path.exists():
            overwrite = self.prompter.confirm(f"{path} exists. Replace it?", default=False)
            if not overwrite:
                return
        try:
            commands_module.save_commands(commands, path, overwrite=overwrite)
        except (OSError, ActionableError) as error:
            self.say(f"problem: the commands could not be saved: {error}")
            return
        self.say(f"saved to {path}")


DEFAULT_SAVE_NAME = "llama-wizard-commands.sh"


def _rate(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} tokens/s"


def _best_quant(report: Any) -> Any:
    """The quant `recommend` would take: the largest that fits, else the largest tight one."""
    for wanted in ("fits", "tight"):
        matching = [e for e in report.quants if e.verdict == wanted]
        if matching:
            return max(matching, key=lambda e: e.file_bytes)
    return None


def _same_flake(ref: str, saved: str | None) -> bool:
    from llama_wizard.nix.flake import normalize_ref

    return saved is not None and (ref == saved or normalize_ref(ref) == normalize_ref(saved))


def _built_path(out_link: str) -> str | None:
    """Where the out-link points when it is a finished build (a /nix/store path), else None."""
    link = Path(out_link)
    if not link.is_symlink():
        return None
    try:
        target = link.resolve(strict=True)
    except OSError:
        return None
    return str(target) if str(target).startswith("/nix/store/") else None


def run_plain(
    *,
    root: str | None = None,
    simulate: str | None = None,
    timeout: float = 10.0,
    yes: bool = False,
    flake: str | None = None,
    gpus: list[int] | None = None,
    model: str | None = None,
    quant: str | None = None,
    ctx: int | None = None,
) -> int:
    """`llama-wizard --plain` / `--yes` (and bare `llama-wizard` on a dumb terminal)."""
    from llama_wizard.tui.machine import open_machine

    prompter = choose_prompter(yes)
    interactive_tty = isinstance(prompter, QuestionaryPrompter)
    settings = Settings.load()
    with open_machine(root, simulate) as machine:
        wizard = PlainWizard(
            machine,
            prompter,
            settings,
            flake=flake,
            gpus=gpus,
            model=model,
            quant=quant,
            ctx=ctx,
            timeout=timeout,
            build_mode="rich" if interactive_tty else "plain",
        )
        try:
            return wizard.run()
        except Quit as quit_:
            if quit_.message:
                print(quit_.message, file=sys.stderr)
            else:
                wizard.say("Quit. Your choices are saved; `llama-wizard --reset` forgets them.")
            return quit_.code
        except StepFailed as error:
            print(f"llama-wizard: {error.message}\n{error.fix}", file=sys.stderr)
            return EXIT_FAILED
        except ActionableError as error:
            print(f"llama-wizard: {error.message}\n{error.fix}", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("\ninterrupted; your choices so far are saved.", file=sys.stderr)
            return EXIT_INTERRUPTED
