"""The plain face of the wizard: the steps of `tui.steps.STEPS` as line-by-line questions.

Each step shows what the session (tui/session.py) knows, then offers a menu whose first entry
(the default) goes on with the preselected choice: this machine's saved one when there is one,
else the recommendation. Every decision is the session's: which GPUs are recommended, which
saved choices are stale, the plan, which quant is best and whether a choice fits, whether this
flake's build is already there, the launch command, what is saved. This module only asks and
prints. Every menu has "Back" (except the first step's) and "Quit"; the choices are saved
after each step left with Next; `--reset` forgets them.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from llama_wizard.detect.errors import ActionableError
from llama_wizard.tui import validate
from llama_wizard.tui.format import human_bytes
from llama_wizard.tui.plain.prompters import (
    BACK,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_QUIT,
    OTHER,
    QUIT,
    Option,
    Prompter,
    QuestionaryPrompter,
    Quit,
    choose_prompter,
)
from llama_wizard.tui.ranking import SORT_KEYS, SPEED_LEGEND, speed_words
from llama_wizard.tui.session import (
    DoesNotFit,
    Overrides,
    WizardSession,
    best_index,
    describe_choice,
)
from llama_wizard.tui.steps import STEPS, step_number

if TYPE_CHECKING:
    from llama_wizard.models.choose import FitReport, ModelChoice
    from llama_wizard.models.source import ModelSource
    from llama_wizard.tui.launch import ExitReport, LaunchedProcess, LaunchSpec
    from llama_wizard.tui.plan import Plan


# The last two entries of every menu but the first step's.
LEAVE = (Option("Back", BACK), Option("Quit", QUIT))


class StepFailed(ActionableError):
    """A step failed with nobody to ask (`--yes`): the flow ends with exit status 1, the error
    on stderr (the transcript, on stdout, has shown it too)."""


def _gpu_words(indices: Sequence[int]) -> str:
    if not indices:
        return "no GPU (the CPU)"
    return ("GPU " if len(indices) == 1 else "GPUs ") + ", ".join(str(i) for i in indices)


def _checked(check: Callable[[Any], Any]) -> Callable[[str], str | None]:
    """A prompt validator from one of tui.validate's checks: its message, or None."""
    return lambda answer: validate.problem(check, answer)


def _not_empty(answer: str) -> str | None:
    return None if answer.strip() else "Type something (or press Ctrl-C to quit)."


class PlainWizard:
    """The steps, each a method that returns "next" or BACK (or raises Quit/StepFailed)."""

    def __init__(
        self,
        session: WizardSession,
        prompter: Prompter,
        *,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        console: Console | None = None,
        build_mode: str = "plain",
    ) -> None:
        self.session = session
        self.prompter = prompter
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.console = console or Console(file=self.out)
        self.build_mode = build_mode
        self.spec: LaunchSpec | None = None  # the last program run
        self.process: LaunchedProcess | None = None
        self.last_exit: ExitReport | None = None  # how the last program run ended
        self.unsaved: str | None = None  # why the choices could not be saved, once they could not
        self._sources: dict[str, ModelSource] = {}
        self.sort = "score"  # the ranked list's order (tui/ranking.py SORT_KEYS)

    # --- output helpers ---

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def item(self, message: str, prefix: str = "  • ") -> None:
        """A message after a bullet or label ("note: "): its `code` spans in quotes, wrapped to
        the terminal with its lines under the text (tui/format.py's rule)."""
        from llama_wizard.tui.format import item, terminal_width

        isatty = getattr(self.out, "isatty", None)
        self.say(item(message, prefix, terminal_width() if isatty and isatty() else None))

    def notes(self) -> None:
        """What the session has to tell since the last time (choices dropped, ...)."""
        for note in self.session.take_notes():
            self.item(note, "note: ")

    def header(self, key: str) -> None:
        simulated = self.session.simulated
        mark = f"   [SIMULATED: {simulated}]" if simulated else ""
        step = STEPS[step_number(key) - 1]
        self.say()
        self.say(f"== Step {step_number(key)}/{len(STEPS)}: {step.title} =={mark}")

    def problem(self, error: ActionableError) -> None:
        self.item(error.message, "problem: ")
        self.item(error.fix, "fix: ")

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

    @property
    def plan(self) -> Plan:
        plan = self.session.plan
        if plan is None:
            raise RuntimeError("plan first")
        return plan

    def save(self) -> None:
        """Save the choices (after each step left with Next); say so once when they cannot be."""
        message = self.session.save()
        if message is not None and message != self.unsaved:
            self.item(message, "note: ")
        self.unsaved = message

    # --- the run ---

    def run(self) -> int:
        steps: dict[str, Callable[[], str]] = {
            "hardware": self.step_hardware,
            "build": self.step_build,
            "model": self.step_model,
            "build-run": self.step_build_run,
            "launch": self.step_launch,
            "done": self.step_done,
        }
        self.notes()
        index = 0
        while index < len(STEPS):
            result = steps[STEPS[index].key]()
            index = max(0, index - 1) if result == BACK else index + 1
        return 0

    # --- step 1: hardware ---

    def step_hardware(self) -> str:
        from llama_wizard.tui.render import gpu_architecture, gpu_memory, print_inventory

        self.header("hardware")
        session = self.session
        if session.inventory is None:
            self.say("Detecting the GPUs, CPU and RAM…")
        inventory = session.detect()
        print_inventory(inventory, self.console)
        from llama_wizard.detect.memory import users_text

        for gpu in inventory.gpus:
            users = users_text(gpu)
            if users:
                self.item(f"GPU {gpu.index}'s memory is in use by {users}", "note: ")
        self.notes()
        recommended = session.recommended_gpus()
        current = session.chosen_gpus()
        if not inventory.gpus:
            self.say("No GPU to choose: llama.cpp will run on the CPU.")
        while True:
            note = " (recommended)" if sorted(current) == sorted(recommended) else ""
            options = [Option(f"Use {_gpu_words(current)}{note}", "use")]
            if inventory.gpus:
                options.append(Option("Choose other GPUs", "choose"))
            # An entry, not a question of its own: the answers a script pipes in stay the same.
            options.append(Option("Add other servers (one model across them)", "cluster"))
            options.append(Option("Quit", QUIT))
            answer = self.ask("Which GPUs should llama.cpp use?", options, "use")
            if answer == "use":
                break
            if answer == "cluster":
                self.ask_cluster()
                continue
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
        session.choose_gpus(current)
        self.save()
        return "next"

    def ask_cluster(self) -> None:
        """One question: other servers to run one model across (llama.cpp RPC). The plan and
        the `cluster up` command are shown; the GPU menu is asked again, and the flow goes on
        for this machine alone (the cluster is started with that command)."""
        from llama_wizard.tui.cluster.text import plan_lines

        def check(answer: str) -> str | None:
            if not answer.strip():
                return None
            try:
                self.session.cluster_hosts(answer)
            except ActionableError as error:
                return f"{error.message} {error.fix}"
            return None

        answer = self.prompter.text(
            "Add other servers to run one model across them? (hosts, or Enter for none)",
            validate=check,
        )
        if not answer.strip():
            return
        hosts = self.session.cluster_hosts(answer)
        self.say(f"Detecting {len(hosts)} hosts…")
        try:
            plan = self.session.plan_cluster(hosts)
        except ActionableError as error:
            self.problem(error)
            return
        for line in plan_lines(plan):
            self.say(line)
        self.say()
        self.say("To start the cluster (here or later):")
        self.say("  " + shlex.join(self.session.cluster_command("up", hosts)))
        self.say("Then choose this machine's GPUs to go on with it alone.")

    # --- step 2: the build ---

    def make_plan(self) -> Any:
        """The session's plan for the choices so far (a saved choice that no longer works is
        dropped by it, with a note shown here)."""
        try:
            return self.session.make_plan()
        finally:
            self.notes()

    def step_build(self) -> str:
        from llama_wizard.tui.render import print_plan

        self.header("build")
        while True:
            try:
                plan = self.make_plan()
                break
            except ActionableError as error:
                answer = self.fail_or_ask(
                    error,
                    [
                        Option("Use another flake", "flake"),
                        *LEAVE,
                    ],
                )
                if answer == BACK:
                    return BACK
                self.session.set_flake(self.ask_flake())
        print_plan(plan, self.console)
        while True:
            build = self.plan.build
            recommended = build.recommended
            if build.output == recommended:
                what = f"Build {build.output} (recommended)"
            else:
                what = f"Build {build.output} (your choice; recommended: {recommended})"
            options = [
                Option(what, "use"),
                Option("Choose another flake output", "output"),
                Option(f"Use another flake (now {build.flake})", "flake"),
                *LEAVE,
            ]
            answer = self.ask("Which build?", options, "use")
            if answer == BACK:
                return BACK
            if answer == "use":
                break
            if answer == "output":
                self.choose_output()
            else:
                self.change_flake(print_plan)
        self.save()
        return "next"

    def replan(self, undo: Callable[[], None]) -> bool:
        """Plan again after a change; when that fails, show why, undo the change and plan
        as before. Whether the change stands."""
        try:
            self.make_plan()
            return True
        except ActionableError as error:
            self.problem(error)
        undo()
        self.make_plan()
        return False

    def change_flake(self, print_plan: Callable[..., None]) -> None:
        session = self.session
        previous = session.choices.flake, session.choices.output

        def undo() -> None:
            session.set_flake(previous[0])
            session.choose_output(previous[1])

        try:
            session.set_flake(self.ask_flake())
        except validate.InvalidValue as error:
            self.problem(error)
            return
        if self.replan(undo):
            print_plan(self.plan, self.console)

    def choose_output(self) -> None:
        from llama_wizard.nix.catalogue import describe

        session = self.session
        plan = self.plan
        build = plan.build
        recommended = build.recommended
        packages = plan.flake_outputs.packages or [build.output]

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
        previous = session.choices.output
        session.choose_output(name)
        if not self.replan(lambda: session.choose_output(previous)):
            return
        build = self.plan.build
        self.say(f"Build: {build.output}   ({shlex.join(build.build_argv)})")
        if build.costs:
            self.say("What this choice costs:")
            for cost in build.costs:
                self.item(cost)
        elif build.output != recommended:
            self.say(f"The recommendation stays {recommended}.")

    def ask_flake(self) -> str:
        from llama_wizard.nix.flake import default_flake_ref

        session = self.session
        current = session.plan.build.flake if session.plan is not None else None
        return self.prompter.text(
            "Flake reference (a path, or e.g. github:ggml-org/llama.cpp)",
            default=current or session.choices.flake or default_flake_ref(),
            validate=_checked(validate.check_flake),
        )

    # --- step 3: the model ---

    def step_model(self) -> str:
        self.header("model")
        session = self.session
        plan = self.plan
        if not session.devices():
            self.say(
                "There is no memory to fit a model into (no GPU chosen, and the RAM is "
                "unknown); name a model on the command line (llama-wizard run --model ...)."
            )
            answer = self.ask("Go on?", [Option("Go on without a model", "use"), *LEAVE], "use")
            return BACK if answer == BACK else "next"
        choice = plan.model
        ctx = session.default_ctx()
        while True:
            self.show_models(choice, ctx)
            if choice is None:
                message = f"No model of the catalogue fits {self.memory_words()} at {ctx} tokens."
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
                ours = session.is_recommended(choice)
                verdict = describe_choice(choice)
                self.say(
                    f"{choice.name} {choice.quant} at {choice.ctx} tokens {verdict} "
                    f"({choice.mode_label}): needs "
                    f"{human_bytes(choice.total_bytes)} of {human_bytes(choice.memory_bytes)}"
                    + (
                        f" and {human_bytes(choice.host_bytes)} of system RAM."
                        if choice.mode != "gpu" and choice.host_bytes
                        else "."
                    )
                )
                speed = speed_words(session.choice_speed(choice))
                if speed and choice.verdict != "no":
                    self.say(f"Speed: {speed}.")
                use = Option(
                    f"Use {choice.name} {choice.quant} at {choice.ctx} tokens"
                    + (" (recommended)" if ours else "")
                    + (" - does NOT fit" if choice.verdict == "no" else ""),
                    "use",
                )
            options = [
                use,
                Option("Choose another model", "model"),
                Option("Choose another quant", "quant", None if choice else "no model chosen"),
                Option(f"Change the context size (now {ctx})", "ctx"),
                *LEAVE,
            ]
            answer = self.ask("Which model?", options, "use")
            if answer == BACK:
                return BACK
            if answer == "use" and choice is not None and self.accept(choice):
                break
            if answer == "model":
                choice = self.choose_model(ctx) or choice
            elif answer == "quant" and choice is not None:
                choice = self.choose_quant(choice)
            elif answer == "ctx":
                ctx, choice = self.change_ctx(choice, ctx)
            if choice is not None:
                ctx = choice.ctx
        self.save()
        return "next"

    def accept(self, choice: ModelChoice) -> bool:
        """Take the choice; one that does not fit only once confirmed (`--yes` refuses it)."""
        try:
            self.session.accept_model(choice)
            return True
        except DoesNotFit as error:
            if not self.prompter.interactive:
                raise StepFailed(error.message, error.fix) from None
            self.problem(error)
            if not self.prompter.confirm("Use it anyway?", default=False):
                return False
        self.session.accept_model(choice, confirmed=True)
        return True

    def memory_words(self) -> str:
        return "these GPUs" if self.session.planned_gpus() else "this machine's free RAM"

    def source(self, spec: str) -> ModelSource:
        """What a model spec names (resolved once: a Hub listing is not asked for again)."""
        if spec not in self._sources:
            self._sources[spec] = self.session.resolve(spec)
        return self._sources[spec]

    def report(self, choice: ModelChoice, ctx: int | None = None) -> FitReport:
        return self.session.fit(self.source(choice.repo), ctx or choice.ctx)

    def show_models(self, choice: ModelChoice | None, ctx: int) -> None:
        session = self.session
        memory = sum(d.memory_bytes for d in session.devices())
        table = Table(
            title=f"Models (best quant for {human_bytes(memory)} at {ctx} tokens)",
            title_justify="left",
        )
        table.add_column("Model")
        table.add_column("Size", no_wrap=True)
        table.add_column("Best fit", no_wrap=True)
        table.add_column("tok/s", no_wrap=True, justify="right")
        # Best first: the ranked list (tui/ranking.py), as `fit --list` and the wizard show it.
        for row in session.model_rows(ctx, self.sort):
            verdict = (
                f"{row.best_quant} {row.verdict} ({row.mode_label})"
                if row.best_quant
                else "does not fit"
            )
            mark = "> " if choice is not None and choice.repo == row.repo else "  "
            table.add_row(mark + row.name, row.size_class, verdict, row.speed_text)
        self.console.print(table)
        self.say(f"Sorted by {self.sort}. {SPEED_LEGEND}.")
        if choice is None:
            return
        report = self.report(choice)
        # Nine columns in 80: two spaces between them (no box) and the words of Mode and Fits
        # may wrap, so that no figure is cut.
        quants = Table(
            title=f"{choice.name}: quants at a {choice.ctx}-token context",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            show_edge=False,
        )
        columns = ("Quant", "File", "Needs", "Free", "RAM", "Mode", "Fits", "Max ctx", "tok/s")
        for column in columns:
            quants.add_column(
                column,
                no_wrap=column not in ("Mode", "Fits", "Max ctx"),
                justify="left" if column in ("Quant", "Mode", "Fits") else "right",
            )
        for row in session.quant_rows(report, _index_of(report, choice.quant)):
            estimate = row.estimate
            mark = "> " if row.chosen else "  "
            quants.add_row(
                mark + row.quant,
                human_bytes(estimate.file_bytes),
                human_bytes(estimate.total_bytes),
                human_bytes(estimate.free_bytes),
                human_bytes(estimate.host_bytes or 0),
                row.mode_label,
                estimate.verdict + (" (best)" if row.recommended else ""),
                str(estimate.max_ctx or "-"),
                row.speed_text if estimate.verdict != "no" else "-",
            )
        self.console.print(quants)
        for reason in choice.reasons:
            self.item(reason)

    def choose_model(self, ctx: int) -> ModelChoice | None:
        from llama_wizard.models.errors import ModelError

        session = self.session
        plan = self.plan
        current = plan.model.repo if plan.model is not None else None
        while True:
            options = [
                Option(
                    f"{row.name} ({row.size_class})"
                    + (
                        f" - nothing fits at {ctx} tokens"
                        if row.best_quant is None
                        else f" - {row.best_quant} {row.badge_text}, {row.speed_text} tok/s"
                    ),
                    row.repo,
                )
                for row in session.model_rows(ctx, self.sort)
            ]
            options.append(Option("Another model: a .gguf path, a URL or a Hub repo", "other"))
            options += [
                Option(f"Sort the list by {key}", f"sort:{key}")
                for key in SORT_KEYS
                if key != self.sort
            ]
            spec = self.prompter.select("Model", options, current)
            if not spec.startswith("sort:"):
                break
            self.sort = spec.removeprefix("sort:")
        if spec == "other":
            spec = self.prompter.text(
                "Model (a .gguf path, an https:// URL or owner/repo[:QUANT])",
                validate=_checked(validate.check_model),
            )
        try:
            report = session.fit(self.source(spec), ctx)
        except ModelError as error:
            self.problem(error)
            return None
        index = session.preselect(report)
        if index is None:
            # Nothing of it fits: show its smallest quant, which goes on only when confirmed.
            index = min(range(len(report.quants)), key=lambda i: report.quants[i].file_bytes)
            self.say(
                f"No quant of {report.source.name} fits at a {report.ctx}-token context; "
                f"showing its smallest, {report.quants[index].quant}."
            )
        return session.choice_at(report, index)

    def choose_quant(self, choice: ModelChoice) -> ModelChoice:
        session = self.session
        report = self.report(choice)
        options = [
            Option(
                f"{row.quant}: {human_bytes(row.estimate.total_bytes)} of "
                f"{human_bytes(row.estimate.memory_bytes)}, {row.mode_label}, "
                f"{describe_choice(row.estimate)}"
                + ("" if row.estimate.verdict == "no" else f", {row.speed_text} tok/s")
                + (" (best)" if row.recommended else ""),
                row.index,
            )
            for row in session.quant_rows(report, _index_of(report, choice.quant))
        ]
        current = _index_of(report, choice.quant)
        index = self.prompter.select("Quant", options, current)
        if index == current:
            return choice
        return session.choice_at(report, index)

    def change_ctx(self, choice: ModelChoice | None, ctx: int) -> tuple[int, ModelChoice | None]:
        """Ask for a context size (checked as every face checks it); the choice at it: the same
        quant when it still fits, else the best quant of the model that does."""
        session = self.session
        answer = self.prompter.text(
            "Context size in tokens", default=str(ctx), validate=_checked(validate.check_ctx)
        )
        new_ctx = validate.check_ctx(answer)
        if choice is None:
            found = session.recommend_model(new_ctx)
            if found is None:
                self.say(f"Still nothing fits at {new_ctx} tokens.")
            return new_ctx, found
        report = self.report(choice, new_ctx)
        index = _index_of(report, choice.quant)
        if index is not None and report.quants[index].verdict != "no":
            return new_ctx, session.choice_at(report, index)
        best = best_index(report)  # on the same report: no second fit
        if best is None:
            self.say(
                f"No quant of {choice.name} fits at {new_ctx} tokens; the context stays "
                f"{choice.ctx}."
            )
            return choice.ctx, choice
        found = session.choice_at(report, best)
        self.say(f"{choice.quant} does not fit at {new_ctx} tokens; {found.quant} does.")
        return new_ctx, found

    # --- step 4: the build run ---

    def step_build_run(self) -> str:
        from llama_wizard.tui.cli.build import run_build
        from llama_wizard.tui.plan import state_dir

        self.header("build-run")
        session = self.session
        self.start_download()  # in the background while the build runs: both are long waits
        while True:
            plan = self.plan
            build = plan.build
            status = session.build_status()
            if status.state == "running":
                pid = status.record.supervisor_pid if status.record is not None else "?"
                self.say(f"A build of {build.output} is already running (pid {pid}); following it.")
                answer = "build"
            elif status.state == "built":
                self.say(
                    f"{build.output} is already built: {build.out_link} -> {status.store_path}"
                )
                answer = self.ask(
                    "Build it again?",
                    [
                        Option("Go on with it", "next"),
                        Option("Build it again", "build"),
                        *LEAVE,
                    ],
                    "next",
                )
            else:
                self.say(f"$ {plan.shell_command()}")
                answer = self.ask(
                    "Build it now?",
                    [
                        Option(f"Build {build.output} now", "build"),
                        *LEAVE,
                    ],
                    "build",
                )
            if answer == "next":
                return self.download_phase()
            if answer == BACK:
                return answer
            try:
                session.check_can_build()
            except ActionableError as error:
                from llama_wizard.nix.errors import NixSetupError

                options = [Option("Check again", "again"), *LEAVE]
                if isinstance(error, NixSetupError) and error.problem.wizard_can_apply:
                    # Asked, never the default: builds would run as root.
                    options.insert(1, Option(
                        "Run llama-wizard's nix commands with `build-users-group =` (builds "
                        "run as root, without build users; remembered for this machine)",
                        "without-build-users",
                    ))  # fmt: skip
                answer = self.fail_or_ask(error, options)
                if answer == BACK:
                    return BACK
                if answer == "without-build-users":
                    session.allow_nix_without_build_users()
                    self.save()  # remembered now, not only when a later step is left
                try:
                    self.make_plan()  # Nix may be there now
                except ActionableError as problem:
                    self.problem(problem)
                continue
            try:
                for cost in build.costs:
                    self.item(cost, "note: ")
                if status.state == "not-built":
                    self.say("Ctrl-C cancels the build (its log is kept).")
                code = run_build(
                    build.build_argv,
                    build.build_label,
                    state_dir(),
                    name=build.build_name,
                    out_link=build.out_link,
                    mode=self.build_mode,
                    env=session.machine.env,
                    out=self.out,
                    err=self.err,
                )
            except (ActionableError, OSError) as error:
                if isinstance(error, OSError):  # what the state directory check did not foresee
                    error = ActionableError(
                        f"The build of {build.output} could not be started: "
                        f"{error.strerror or error}"
                        + (f" ({error.filename})." if error.filename else "."),
                        f"Check that {state_dir()} can be written, or point XDG_STATE_HOME at "
                        "a writable directory.",
                    )
                answer = self.fail_or_ask(
                    error,
                    [Option("Try again", "again"), *LEAVE],
                )
                if answer == BACK:
                    return BACK
                continue
            if code == 0:
                return self.download_phase()
            what = "was cancelled" if code == 130 else "failed"
            answer = self.fail_or_ask(
                ActionableError(
                    f"The build of {build.output} {what} (see above).",
                    "Read the log named above, fix the cause, and build again; "
                    "or go back and choose another build.",
                ),
                [Option("Build again", "again"), *LEAVE],
            )
            if answer == BACK:
                return BACK

    # --- step 4 too: the model's download ---

    def start_download(self) -> None:
        """Start downloading the plan's model (when it is not here yet), to run beside the
        build; download_phase shows it and waits for it."""
        from llama_wizard.models.download import format_bytes

        job = self.session.start_download()
        if job is not None and not job.done:
            size = self.plan.model.file_bytes if self.plan.model is not None else 0
            self.say(f"Downloading {job.target.spec} ({format_bytes(size)}) in the background.")

    def download_phase(self) -> str:
        """Wait for the model's download with a progress line every few seconds; Ctrl-C stops
        it (the part is kept and resumes). "next" when the model is here (or when the person
        goes on without it: llama.cpp's -hf then fetches it at launch), else BACK."""
        import time

        from llama_wizard.models.download import cache_dir, progress_line

        session = self.session
        while True:
            job = session.start_download()
            if job is None:
                return "next"
            if not job.done:
                self.say(f"Downloading {job.target.spec} into {cache_dir()}; Ctrl-C stops it "
                         "(it resumes next time).")  # fmt: skip
            shown = 0.0
            try:
                while not job.wait(0.25):
                    progress = job.progress
                    if progress is not None and time.monotonic() - shown >= 2:
                        shown = time.monotonic()
                        self.say(progress_line(progress))
            except KeyboardInterrupt:
                session.stop_download()
                job.wait(10)
            if job.result is not None:
                if job.progress is not None:
                    self.say(progress_line(job.progress))
                self.say(f"The model is here: {job.result.path}")
                return "next"
            error = job.error or ActionableError(
                "The download was stopped.", "Start it again: it resumes."
            )
            self.problem(error)
            if not self.prompter.interactive:
                # --yes goes on: llama.cpp's -hf tries the download itself at launch.
                self.say("Going on without it: llama.cpp downloads the model when it starts.")
                return "next"
            answer = self.ask(
                "What now?",
                [
                    Option("Try the download again (it resumes)", "again"),
                    Option("Go on without it (llama.cpp downloads it when it starts)", "next"),
                    *LEAVE,
                ],
                "again",
            )
            if answer in ("next", BACK):
                return answer

    # --- step 5: the launch ---

    def step_launch(self) -> str:
        self.header("launch")
        session = self.session
        choices = session.choices
        devices = session.check_devices()  # llama.cpp's own list, before anything runs
        if devices is not None:
            for text in devices.lines():
                self.say(text)
        self.notes()
        default = "server" if choices.program == "llama-server" else "completion"
        if not self.prompter.interactive:
            default = "completion"
        ran = False
        while True:
            options = [
                Option("Run llama-completion with a prompt", "completion"),
                Option(f"Run llama-server on {session.server_url()}", "server"),
                Option("Go on to the commands", "next"),
                *LEAVE,
            ]
            answer = self.ask("Launch what?", options, "next" if ran else default)
            if answer in (BACK, "next"):
                return answer
            if answer == "completion":
                prompt = self.prompter.text(
                    "Prompt", default=choices.prompt, validate=_checked(validate.check_prompt)
                )
                session.set_launch(program="llama-completion", prompt=prompt)
            else:
                host = self.prompter.text(
                    "Host to listen on",
                    default=choices.host,
                    validate=_checked(validate.check_host),
                )
                port = self.prompter.text(
                    "Port", default=str(choices.port), validate=_checked(validate.check_port)
                )
                session.set_launch(program="llama-server", host=host, port=port)
            self.save()
            program = choices.program
            code = self.launch(program)
            ran = True
            if code != 0 and not self.prompter.interactive:
                report = self.last_exit
                raise StepFailed(
                    report.message if report else f"{program} exited with status {code}.",
                    (report.fix if report and report.fix else "Read its output above.")
                    + " `llama-wizard --plain` lets you change the model, quant or context.",
                )

    def make_spec(self, program: str) -> LaunchSpec:
        return self.session.launch_spec(program)

    def launch(self, program: str) -> int:
        """Run the program, its output streamed, until it ends or Ctrl-C stops it; once
        llama-server is up, its answer to a first short request (tui/first_request.py). Returns
        its exit status (0 when it was stopped on purpose)."""
        from llama_wizard.tui.first_request import FirstRequest, FirstRequestError, ask_server
        from llama_wizard.tui.launch import LaunchedProcess

        session = self.session
        try:
            spec = self.make_spec(program)
            process = LaunchedProcess.start(spec, base_env=session.machine.env)
        except ActionableError as error:
            if not self.prompter.interactive:
                raise StepFailed(error.message, error.fix) from None
            self.problem(error)
            return 1
        self.spec, self.process = spec, process
        if session.simulated:
            self.say(
                f"note: the machine is SIMULATED ({session.simulated}); the program "
                "runs here, on this machine's hardware."
            )
        self.say(f"$ {spec.shell_command()}")
        if program == "llama-server":
            self.say(f"llama-server listens on {session.server_url()}; Ctrl-C stops it.")
            key_note = session.api_key_note()
            if key_note:
                self.item(key_note, "note: ")
        else:
            self.say("Ctrl-C stops it.")
        stopped = up = False
        asking: FirstRequest | None = None
        try:
            while not process.finished:
                for _stream, line in process.lines(timeout=0.2):
                    self.say(line)
                if program == "llama-server" and not up and process.listening_url:
                    up = True
                    self.say(f"llama-server is up: {session.server_url()} (Ctrl-C stops it)")
                    asking = ask_server(spec, session.server_url(), session.machine.env)
                answer = asking.poll() if asking is not None else None
                if isinstance(answer, FirstRequestError):
                    asking = None
                    self.problem(answer)
                elif answer is not None:
                    asking = None
                    self.say(answer.summary())
        except KeyboardInterrupt:
            stopped = True
            self.say(f"\nstopping {program}… (Ctrl-C again kills it)")
            try:
                process.stop()
            except KeyboardInterrupt:
                process.stop(grace=0)
        finally:
            if asking is not None:
                asking.abandon()  # the server stopped before it answered
            process.stop()
            for _stream, line in process.lines(timeout=0):
                self.say(line)
        summary = process.timing_now().summary()
        if summary:
            self.say(f"speed: {summary}")
        for note in session.record_timing(process.timing_now(), program):
            self.say(f"note: {note}")
        report = process.exit_report()
        for line in report.text_lines():
            self.say(line)
        if report.fix:
            self.item(report.fix, "fix: ")
        self.last_exit = report
        return 0 if stopped else report.status

    # --- step 6: done ---

    def step_done(self) -> str:
        self.header("done")
        commands = self.session.commands()
        self.notes()
        for command in commands:
            self.say()
            self.say(f"# {command.title}")
            self.say(command.text.rstrip("\n"))
        if commands:
            self.say()
        while True:
            options = [Option("Finish", "finish")]
            if commands:
                options.append(Option("Save these commands to a file", "save"))
                options.append(Option("Keep the server running (a systemd service)", "service"))
            options += LEAVE
            answer = self.ask("Done. What now?", options, "finish")
            if answer == BACK:
                return BACK
            if answer == "finish":
                return "next"
            if answer == "service":
                self.keep_running()
                continue
            self.save_commands()

    def keep_running(self) -> None:
        """The unit of tui/service.py: shown, then installed when agreed (the module's snippet
        on NixOS; a simulated machine's is only shown)."""
        from llama_wizard.tui import service

        session = self.session
        try:
            if session.is_nixos():
                snippet = session.nixos_service()
                if snippet is None:
                    self.item("this flake has no NixOS module (nixosModules.default)", "problem: ")
                    return
                self.say(snippet.text.rstrip("\n"))
                self.say("This is NixOS: add the above to /etc/nixos/flake.nix, then run:")
                for argv in service.nixos_apply_commands():
                    self.say(f"  {shlex.join(argv)}")
                return
            unit = session.service_unit(check_built=False)
            self.say(f"# {unit.location.path} ({unit.location.scope} unit)")
            self.say(unit.text.rstrip("\n"))
            for note in unit.notes:
                self.item(note, "note: ")
            for line in unit.shown_commands():
                self.say(f"$ {line}")
            if session.simulated:
                self.say("(simulated machine: shown, not installed)")
                return
            if not self.prompter.confirm("Install and start it?", default=False):
                self.say("Nothing installed.")
                return
            service.check_systemd()
            session.service_unit(check_built=True)
            state = service.install(unit, self.say)
        except ActionableError as error:
            self.item(error.message, "problem: ")
            self.item(error.fix, "fix: ")
            return
        self.say(f"{state.summary()}: it stays up after you log out.")

    def save_commands(self) -> None:
        from llama_wizard.tui.commands import CommandsFileExists

        session = self.session
        path = self.prompter.text(
            "Save to", default=str(session.default_commands_path()), validate=_not_empty
        )
        try:
            try:
                saved = session.save_commands(path)
            except CommandsFileExists as exists:
                if not self.prompter.confirm(f"{exists.message} Replace it?", default=False):
                    self.say("Not saved.")
                    return
                saved = session.save_commands(path, overwrite=True)
        except ActionableError as error:
            self.item(f"the commands could not be saved: {error.message}", "problem: ")
            self.item(error.fix, "fix: ")
            return
        self.say(f"saved to {saved}")


def _index_of(report: FitReport, quant: str) -> int | None:
    quants = [c.quant for c in report.source.candidates]
    return quants.index(quant) if quant in quants else None


def run_plain(
    *,
    root: str | None = None,
    simulate: str | None = None,
    timeout: float = 10.0,
    yes: bool = False,
    overrides: Overrides | None = None,
) -> int:
    """`llama-wizard --plain` / `--yes` (and bare `llama-wizard` on a dumb terminal);
    `overrides`: what the command line named."""
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.settings import SettingsStore

    prompter = choose_prompter(yes)
    interactive_tty = isinstance(prompter, QuestionaryPrompter)
    store = SettingsStore.load()
    with open_machine(root, simulate) as machine:
        session = WizardSession(machine, store, overrides, timeout=timeout)
        wizard = PlainWizard(session, prompter, build_mode="rich" if interactive_tty else "plain")
        try:
            return wizard.run()
        except Quit as quit_:
            if quit_.message:
                from llama_wizard.tui.format import plain_text

                # On a line of its own: a prompt may have been left waiting for an answer.
                print("\n" + plain_text(quit_.message), file=sys.stderr)
            elif wizard.unsaved:
                wizard.say("Quit. Your choices could not be saved (see the note above).")
            else:
                wizard.say("Quit. Your choices are saved; `llama-wizard --reset` forgets them.")
            return quit_.code
        except ActionableError as error:  # StepFailed too: nobody to ask, or no way on
            from llama_wizard.tui.cli.options import print_error

            print_error(error.message, error.fix)
            return EXIT_FAILED
        except KeyboardInterrupt:
            print("\ninterrupted; your choices so far are saved.", file=sys.stderr)
            return EXIT_INTERRUPTED
