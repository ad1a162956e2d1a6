"""The wizard's flow core: what each step knows and decides, once, for every face.

The full-screen wizard (screens/), plain mode and `--yes` (tui/plain/) and the subcommands
(tui/cli/) only ask and show; the rules live here: the recommended GPUs, which saved choices
are stale on this machine or flake, the plan, the model fit and the best quant, whether a choice
that does not fit may go on, the build status of this flake + output, the launch command, and
what is saved and how (a choice equal to the recommendation is saved as "the recommendation").

Threads: the methods that only compute (`detect_inventory`, `plan_outcome`, `resolve`, `fit`,
`model_rows`, `build_status`) read the session and change nothing, so a Textual worker may call
them; every method that changes the session (`set_*`, `choose_*`, `accept_*`, `adopt_plan`,
`save`) belongs to the UI thread (a worker posts a message, the handler calls it).

No Textual, no questionary, no printing: faces show `take_notes()` and the errors raised
(ActionableError subclasses, each with a message and a fix)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.tui import validate
from llama_wizard.tui.settings import Choices, SettingsNotSaved, SettingsStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from llama_wizard.detect.model import Gpu, Inventory
    from llama_wizard.models.choose import FitReport, LaunchSettings, ModelChoice
    from llama_wizard.models.download import DownloadJob, HubTarget
    from llama_wizard.models.estimate import Device, Estimate
    from llama_wizard.models.source import ModelSource
    from llama_wizard.models.speed import CpuSpec, Speed
    from llama_wizard.nix.build import BuildStatus
    from llama_wizard.nix.environment import SetupProblem
    from llama_wizard.nix.recommend import BuildChoice, PlanWarning
    from llama_wizard.tui.commands import Command
    from llama_wizard.tui.devices import DeviceCheck
    from llama_wizard.tui.launch import LaunchSpec
    from llama_wizard.tui.machine import Machine
    from llama_wizard.tui.plan import Plan
    from llama_wizard.tui.ranking import RankedModel, SpeedContext
    from llama_wizard.tui.service import ServiceUnit
    from llama_wizard.tui.verify import Agreement, FitVerdict

COMMANDS_FILE_NAME = "llama-wizard-commands.sh"


class DoesNotFit(ActionableError):
    """A model choice whose estimate says it does not fit: it goes on only when confirmed."""

    def __init__(self, choice: ModelChoice) -> None:
        super().__init__(
            f"{choice.name} {choice.quant} at {choice.ctx} tokens needs "
            f"{choice.total_bytes / (1 << 30):.1f} GiB but only "
            f"{choice.memory_bytes / (1 << 30):.1f} GiB is there: it does NOT fit, and "
            "llama.cpp would fail to load it or run slowly out of system RAM.",
            "Choose a smaller quant or context (`llama-wizard fit MODEL` lists what fits), or "
            "confirm to try it anyway.",
        )
        self.choice = choice


@dataclass(frozen=True)
class Overrides:
    """What the command line named. These win over saved choices and are never dropped as
    stale (a saved choice that no longer works is)."""

    flake: str | None = None
    output: str | None = None
    gpus: list[int] | None = None
    model: str | None = None
    quant: str | None = None
    ctx: int | None = None
    # What the memory estimate assumes of the launch: -fa on|off|auto and llama-server's -np N.
    flash_attn: str | None = None
    n_parallel: int | None = None
    # The run mode (gpu, moe-offload, hybrid, cpu); None: auto, the best each quant runs in.
    mode: str | None = None
    # --nix-without-build-users: the wizard's nix commands run with `build-users-group =`.
    nix_without_build_users: bool = False
    # --memory auto|total|free: plan a GPU other processes use on its free memory or its whole
    # memory (detect/memory.py); None: auto.
    memory: str | None = None


@dataclass
class ModelRow:
    """A model of the ranked list (tui/ranking.py: the catalogue and the GGUF files on this
    machine) with its best quant on the chosen memory (the Model step's list, plain mode's)."""

    repo: str  # what --model takes: the catalogue repo id, or a local file's path
    name: str
    size_class: str
    best_quant: str | None
    verdict: str  # fits, tight or no
    # The best quant's run mode (gpu, moe-offload, hybrid, cpu) and its short label ("GPU",
    # "MoE→RAM 12", "hybrid 30/49", "CPU"); None when nothing runs.
    mode: str | None = None
    mode_label: str | None = None
    # The model's fit badge (tui/ranking.py BADGES: fits, tight, ram, cpu, no) and its words
    # ("fits", "tight", "GPU+RAM", "CPU only", "no").
    badge: str = "no"
    badge_text: str = "no"
    # The best quant's speed (measured here when there is a measurement, else predicted) and
    # its cell ("~42" predicted, "42 m" measured, "-" unknown).
    speed: Speed | None = None
    speed_text: str = "-"
    score: float = 0.0
    params_b: float = 0.0
    kind: str = "catalogue"  # or "local": a GGUF file in llama.cpp's or the HF cache
    cached: bool = False  # the best quant's file is on this machine


@dataclass
class QuantRow:
    """One quant of a fit report, as both faces show it."""

    index: int
    quant: str
    estimate: Estimate
    chosen: bool
    recommended: bool
    # Prompt and generation tokens/s in this quant's mode: measured on this machine when there
    # is a measurement, else predicted (Speed.source says which); None: not known.
    speed: Speed | None = None

    @property
    def speed_text(self) -> str:
        """The generation speed as a cell: "~42" predicted, "42 m" measured, "-" unknown."""
        from llama_wizard.tui.ranking import speed_text

        return speed_text(self.speed)

    @property
    def mode(self) -> str:
        """The run mode of this quant's verdict: gpu, moe-offload, hybrid or cpu."""
        return self.estimate.mode

    @property
    def mode_label(self) -> str:
        """The mode, short: "GPU", "MoE→RAM 12", "hybrid 30/49", "CPU"."""
        return self.estimate.mode_label


@dataclass
class PlanOutcome:
    """A plan and what making it decided about stale saved choices (applied by adopt_plan)."""

    plan: Plan
    dropped: list[str] = field(default_factory=list)  # fields reset to the recommendation
    notes: list[str] = field(default_factory=list)


def machine_fingerprint(inventory: Inventory) -> tuple[str, str]:
    """(key, label) for this machine's saved choices: its GPUs' vendor, name, memory and PCI
    ids. A simulated profile gets its own key, apart from any real machine."""
    if inventory.simulated:
        return f"simulated:{inventory.simulated}", f"simulated {inventory.simulated}"
    parts = sorted(
        f"{g.vendor}|{g.name}|{g.vram_total_bytes}|{g.pci_device_id}|{g.pci_bus_id}"
        for g in inventory.gpus
    )
    if not parts:
        return "cpu-only", "no GPU"
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    names: dict[str, int] = {}
    for gpu in inventory.gpus:
        names[gpu.name] = names.get(gpu.name, 0) + 1
    label = ", ".join(f"{n}x {name}" if n > 1 else name for name, n in names.items())
    return f"gpus:{digest}", label


def best_index(report: FitReport) -> int | None:
    """The quant to take from a report: the largest that fits with room, else the largest tight
    one; None when none fits."""
    from llama_wizard.models.choose import best_quant_index

    return best_quant_index(report)


class WizardSession:
    def __init__(
        self,
        machine: Machine,
        store: SettingsStore | None = None,
        overrides: Overrides | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        """`store` None: nothing is read or saved (the subcommands)."""
        self._machine = machine
        self.store = store
        self.overrides = overrides or Overrides()
        self.timeout = timeout
        self.inventory: Inventory | None = None
        self.choices = Choices()
        self.plan: Plan | None = None
        self._notes: list[str] = list(store.notes) if store else []
        if store:
            store.notes.clear()
        self._machine_key: tuple[str, str] | None = None
        # This host's CPU and RAM bandwidth for the speed prediction, per inventory (measured
        # once per machine and cached on disk; kept here so a table asks once).
        self._cpu_spec: tuple[int, CpuSpec] | None = None
        # The plan's model downloading (or downloaded) in the background: kept here, not on a
        # screen, so that leaving the Build run step and coming back finds it again.
        self._download: DownloadJob | None = None
        self._devices_of: str | None = None  # the build (store path) plan.device_check is of

    @property
    def machine(self) -> Machine:
        """The machine, with the environment every nix command of the wizard gets: planning,
        asking the flake, building (one place, so none of them differs)."""
        if not self.nix_without_build_users:
            return self._machine
        from dataclasses import replace

        from llama_wizard.nix.environment import without_build_users

        return replace(self._machine, env=without_build_users(self._machine.env))

    @property
    def nix_without_build_users(self) -> bool:
        return self.choices.nix_without_build_users or self.overrides.nix_without_build_users

    def allow_nix_without_build_users(self, agreed: bool = True) -> None:
        """The person agreed (or no longer agrees) that the wizard's nix commands run with
        `build-users-group =`: as root, without Nix's build users. Remembered with this
        machine's choices; the plan is made again with it."""
        if agreed != self.choices.nix_without_build_users:
            self.choices.nix_without_build_users = agreed
            self.plan = None

    def setup_problem(self) -> SetupProblem | None:
        """What stops every build with Nix as it is set up (from the plan's look at Nix)."""
        plan = self.plan
        return plan.nix.setup_problem if plan is not None and plan.nix is not None else None

    def asking_text(self) -> str:
        """What planning is doing while it asks the flake (it may fetch it from GitHub)."""
        from llama_wizard.nix.flake import asking_text, default_flake_ref, normalize_ref

        flake = self.choices.flake
        return asking_text(normalize_ref(flake) if flake else default_flake_ref())

    # --- messages ------------------------------------------------------------------------------

    @property
    def simulated(self) -> str | None:
        return self.machine.simulated

    def note(self, text: str) -> None:
        self._notes.append(text)

    def take_notes(self) -> list[str]:
        """What the face should show the person since it last asked (choices dropped, ...)."""
        notes, self._notes = self._notes, []
        return notes

    # --- step 1: hardware ----------------------------------------------------------------------

    def detect_inventory(
        self, on_partial: Callable[[Inventory, list[str]], None] | None = None
    ) -> Inventory:
        """Detect this machine (slow: run it in a worker, then set_inventory). `on_partial`,
        when given, is called (on the calling thread) with what is known so far and the names
        of the sources that have answered, as each answers: sysfs lists the GPUs before a slow
        rocminfo or nvidia-smi has spoken."""
        if on_partial is None:
            return self.machine.detect(self.timeout)
        from llama_wizard.detect.inventory import merge, run_sources

        machine = self.machine
        answered: list[Any] = []

        def on_result(result: Any) -> None:
            answered.append(result)
            partial = merge(machine.root, list(answered))
            partial.simulated = machine.simulated
            on_partial(partial, [r.name for r in answered])

        results = run_sources(
            machine.root, timeout=self.timeout, env=machine.env, on_result=on_result
        )
        inventory = merge(machine.root, results)
        inventory.simulated = machine.simulated
        return inventory

    def detect(self) -> Inventory:
        """Detect once and adopt the result (plain mode, the subcommands)."""
        if self.inventory is None:
            self.set_inventory(self.detect_inventory())
        assert self.inventory is not None
        return self.inventory

    def set_inventory(self, inventory: Inventory) -> None:
        """Adopt a detection result. The first time, this machine's saved choices are loaded and
        the command line's applied over them; GPUs that are not there are dropped."""
        first = self.inventory is None
        self.inventory = inventory
        self.plan = None
        if first:
            self._load_choices(inventory)
        known = {g.index for g in inventory.gpus}
        gpus = self.choices.gpus
        if gpus is not None and not set(gpus) <= known:
            if self.overrides.gpus is not None:
                from llama_wizard.detect.errors import ChoiceError

                listing = ", ".join(f"{g.index} ({g.name})" for g in inventory.gpus) or "none"
                raise ChoiceError(
                    f"There is no GPU {', '.join(str(i) for i in sorted(set(gpus) - known))} "
                    "on this machine.",
                    f"Choose from the detected GPUs: {listing} (see `llama-wizard detect`).",
                )
            self.note(
                f"The saved choice of GPUs {', '.join(map(str, gpus))} does not match this "
                "machine; using the recommendation."
            )
            self.choices.gpus = None
            self.choices.output = None

    def _load_choices(self, inventory: Inventory) -> None:
        self._machine_key = machine_fingerprint(inventory)
        key, label = self._machine_key
        if self.store is not None:
            self.choices = self.store.choices_for(key, label, simulated=bool(inventory.simulated))
            self._notes += self.store.notes
            self.store.notes.clear()
        self._apply_overrides()

    def _apply_overrides(self) -> None:
        named = self.overrides
        choices = self.choices
        if named.flake is not None:
            if choices.flake is not None and not _same_flake(named.flake, choices.flake):
                choices.output = None  # an output chosen for another flake
            choices.flake = named.flake
        if named.gpus is not None:
            if choices.gpus is not None and sorted(named.gpus) != sorted(choices.gpus):
                choices.output = None
            choices.gpus = list(named.gpus)
        if named.output is not None:
            choices.output = named.output
        if named.model is not None:
            if named.model != choices.model:
                choices.quant = choices.ctx = None  # the saved ones were for another model
            choices.model = named.model
        if named.quant is not None:
            choices.quant = named.quant
        if named.ctx is not None:
            choices.ctx = named.ctx

    def _inventory(self) -> Inventory:
        if self.inventory is None:
            raise RuntimeError("detect first")
        return self.inventory

    def recommended_gpus(self) -> list[int]:
        from llama_wizard.detect.selection import default_gpus

        return [g.index for g in default_gpus(self._inventory())[0]]

    def chosen_gpus(self) -> list[int]:
        """The GPUs the person chose (or the recommendation)."""
        if self.choices.gpus is None:
            return self.recommended_gpus()
        return list(self.choices.gpus)

    def planned_gpus(self) -> list[Gpu]:
        """The GPUs the plan really uses (a build may leave some out: an iGPU, an old card)."""
        inventory = self._inventory()
        indices = self.plan.build.gpus if self.plan is not None else self.chosen_gpus()
        chosen = [g for g in inventory.gpus if g.index in indices]
        if self.plan is None:
            from llama_wizard.detect.selection import one_mig_instance

            chosen = one_mig_instance(chosen)[0]  # a CUDA process sees one MIG instance
        return chosen

    def masked_gpus(self) -> list[int]:
        """The chosen GPUs the build leaves out (an iGPU next to a discrete GPU, ...): the plan's
        answer when there is a plan, else the build rule asked on the outputs the flake is
        assumed to have (no Nix call, so the Hardware step can show it at once)."""
        chosen = self.chosen_gpus()
        if self.plan is not None:
            used = set(self.plan.build.gpus)
        else:
            build = self._assumed_build(gpu_indices=chosen)
            if build is None:
                return []  # the Build step says what is wrong
            used = set(build.gpus)
        return [index for index in chosen if index not in used]

    def _assumed_build(
        self, *, gpu_indices: list[int] | None, output: str | None = None
    ) -> BuildChoice | None:
        """The build rule on the outputs the flake is assumed to have (no Nix call), before
        there is a plan: for what the steps show at once. None when the rule refuses."""
        from llama_wizard.nix.flake import default_flake_ref, normalize_ref
        from llama_wizard.nix.recommend import nix_system, recommend
        from llama_wizard.tui.plan import assumed_outputs, state_dir

        inventory = self._inventory()
        flake = self.choices.flake
        try:
            ref = normalize_ref(flake) if flake else default_flake_ref()
            outputs = assumed_outputs(ref, nix_system(inventory))
            return recommend(inventory, outputs, None, state_dir(), output=output,
                             gpu_indices=gpu_indices)  # fmt: skip
        except ActionableError:
            return None

    def choose_gpus(self, indices: list[int]) -> None:
        chosen = validate.check_gpus(list(indices))
        known = {g.index for g in self._inventory().gpus}
        unknown = [i for i in chosen if i not in known]
        if unknown:
            raise validate.InvalidValue(
                f"There is no GPU {', '.join(map(str, unknown))} on this machine.",
                "Choose from the GPUs listed.",
            )
        new = None if sorted(chosen) == sorted(self.recommended_gpus()) else sorted(chosen)
        if sorted(self.chosen_gpus()) != sorted(chosen):
            self.choices.output = None  # another set of GPUs: the build is chosen afresh
            self.plan = None
        self.choices.gpus = new

    # --- step 1 too: other servers (llama-wizard cluster) -----------------------------------

    def cluster_hosts(self, text: str) -> list[str]:
        """The hosts a person typed (`gpu2 user@gpu3`), this machine first: it is the head.
        Raises HostError (or InvalidValue for unbalanced quotes) saying what to type."""
        import shlex

        from llama_wizard.tui.cluster.hosts import parse_hosts

        try:
            words = shlex.split(text)
        except ValueError as error:
            raise validate.InvalidValue(
                f"The hosts could not be read: {error}.",
                "Type SSH destinations separated by spaces, e.g. gpu2 user@gpu3.",
            ) from None
        hosts = ["local", *[w for w in words if w != "local"]]
        parse_hosts(hosts)
        if len(hosts) < 2:
            raise validate.InvalidValue(
                "No other server was named.",
                "Type at least one: an SSH destination (user@gpu2), an alias from "
                "~/.ssh/config, or sim:PROFILE to try a plan with a bundled profile.",
            )
        return hosts

    def cluster_request(self, hosts: list[str]) -> Any:
        """The cluster plan's request for these hosts with this session's flake, model, quant,
        context and launch settings; `local` is the machine the session looks at."""
        from llama_wizard.tui.cluster.hosts import parse_hosts
        from llama_wizard.tui.cluster.plan import ClusterRequest

        choices = self.choices
        root = str(self.machine.root.root)
        return ClusterRequest(
            hosts=parse_hosts(hosts),
            flake=choices.flake,
            model=choices.model,
            quant=choices.quant,
            ctx=choices.ctx,
            timeout=min(self.timeout * 2, 30.0),
            root=None if self.simulated or root == "/" else root,
            simulate=self.simulated,
        )

    def plan_cluster(self, hosts: list[str]) -> Any:
        """The cluster plan (slow: detection over SSH and a link measure; run it in a worker)."""
        from llama_wizard.tui.cluster.plan import make_cluster_plan

        return make_cluster_plan(self.cluster_request(hosts))

    def cluster_command(self, action: str, hosts: list[str]) -> list[str]:
        """`llama-wizard cluster ACTION HOSTS...` with this session's choices, to run or copy."""
        argv = ["llama-wizard", "cluster", action, *hosts]
        choices = self.choices
        for option, value in (
            ("--flake", choices.flake),
            ("--model", choices.model),
            ("--quant", choices.quant),
            ("--ctx", choices.ctx),
        ):
            if value:
                argv += [option, str(value)]
        if self.simulated:
            argv += ["--simulate", self.simulated]
        return argv

    # --- step 2: the build ---------------------------------------------------------------------

    def set_flake(self, ref: str | None) -> None:
        ref = validate.check_flake(ref) if ref is not None and ref.strip() else None
        if ref != self.choices.flake:
            self.choices.flake = ref
            self.choices.output = None
            self.plan = None

    def choose_output(self, output: str | None) -> None:
        """A flake output by name; None (or the recommended one): the recommendation."""
        output = validate.check_output(output) if output else None
        if self.plan is not None and output == self.plan.build.recommended_output:
            output = None
        if output != self.choices.output:
            self.choices.output = output
            self.plan = None

    def _saved(self, name: str) -> bool:
        """Whether the value of a field comes from saved choices (droppable), not the command
        line."""
        value = getattr(self.choices, name)
        return value is not None and value != getattr(self.overrides, name)

    def plan_outcome(self) -> PlanOutcome:
        """The plan for the choices so far (slow: asks the flake; run it in a worker, then
        adopt_plan). A saved output the flake lacks, or a saved model that cannot be read or
        does not fit, is dropped with a note; what the command line named raises instead
        (ActionableError: flake unreadable, no such output/GPU, model unreadable, bad quant)."""
        from llama_wizard.detect.errors import ChoiceError
        from llama_wizard.models.errors import ModelError
        from llama_wizard.tui.plan import make_plan

        inventory = self._inventory()
        choices = self.choices
        output, model, quant, ctx = choices.output, choices.model, choices.quant, choices.ctx
        outcome_dropped: list[str] = []
        notes: list[str] = []
        settings = self.launch_settings()
        for _attempt in range(4):
            try:
                plan = make_plan(
                    self.machine,
                    inventory,
                    flake_ref=choices.flake,
                    output=output,
                    gpu_indices=choices.gpus,
                    model=model,
                    quant=quant,
                    ctx=ctx,
                    flash_attn=settings.flash_attn,
                    n_parallel=settings.n_parallel,
                    mode=settings.mode,
                    memory=self.memory_choice(),
                )
            except ChoiceError as error:
                if output is None or not self._saved("output"):
                    raise
                notes.append(f"{error.message} Using the recommended build instead.")
                output = None
                outcome_dropped.append("output")
                continue
            except ModelError as error:
                if not any(self._saved(n) for n in ("model", "quant", "ctx")):
                    raise
                notes.append(f"{error.message} Using the recommended model instead.")
                model = quant = ctx = None
                outcome_dropped += ["model", "quant", "ctx"]
                continue
            saved_model = any(self._saved(n) for n in ("model", "quant", "ctx"))
            if saved_model and (plan.model is None or plan.model.verdict == "no"):
                what = " ".join(str(v) for v in (model, quant) if v) or "the saved model"
                notes.append(
                    f"The saved choice ({what}"
                    + (f" at {ctx} tokens" if ctx else "")
                    + ") does not fit the chosen memory; using the recommendation instead."
                )
                model = quant = ctx = None
                outcome_dropped += ["model", "quant", "ctx"]
                continue
            plan.warnings[:0] = _nix_setup_warnings(plan, self.nix_without_build_users)
            return PlanOutcome(plan, outcome_dropped, notes)
        raise RuntimeError("planning did not settle")  # pragma: no cover - each retry drops more

    def adopt_plan(self, outcome: PlanOutcome) -> Plan:
        for name in dict.fromkeys(outcome.dropped):
            setattr(self.choices, name, None)
        self._notes += outcome.notes
        self.plan = outcome.plan
        model = outcome.plan.model
        if model is not None and _same_model(model, outcome.plan.recommended_model):
            self.choices.model = self.choices.quant = self.choices.ctx = None
        return outcome.plan

    def make_plan(self) -> Plan:
        """plan_outcome + adopt_plan, for faces that wait (plain mode, the subcommands)."""
        self.detect()
        return self.adopt_plan(self.plan_outcome())

    def _plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("plan first")
        return self.plan

    # --- step 3: the model ---------------------------------------------------------------------

    def devices(self) -> list[Device]:
        """The memory a model must fit: the planned GPUs', or with none the RAM the CPU build
        runs in."""
        from llama_wizard.models.choose import devices_for

        return devices_for(self.planned_gpus(), self._inventory(), self.memory_choice())

    def memory_choice(self) -> str:
        """auto, total or free: what a GPU other processes use is planned on."""
        return self.overrides.memory or "auto"

    def memory_notes(self) -> list[str]:
        """Who holds the planned GPUs' memory now, and what the plan assumed of it."""
        from llama_wizard.detect.memory import memory_note

        notes = (memory_note(gpu, self.memory_choice()) for gpu in self.planned_gpus())
        return [note for note in notes if note]

    def host_memory(self) -> int | None:
        return self._inventory().memory_available_bytes or None

    def launch_settings(self) -> LaunchSettings:
        """Flash attention and server slots as the command line named them (auto, and
        llama-completion's one sequence, otherwise), for the planned build's backend."""
        from llama_wizard.models.choose import LaunchSettings, backend_for

        named = self.overrides
        flash_attn = validate.check_flash_attn(named.flash_attn or "auto")
        n_parallel = None if named.n_parallel is None else validate.check_parallel(named.n_parallel)
        if self.plan is not None:
            backend: str | None = self.plan.build.backend
        else:
            backend = backend_for(self.planned_gpus())
        return LaunchSettings(flash_attn, n_parallel, backend, named.mode or "auto")

    def default_ctx(self) -> int:
        model = self.plan.model if self.plan is not None else None
        return model.ctx if model is not None else (self.choices.ctx or 32768)

    def resolve(self, spec: str, quant: str | None = None) -> ModelSource:
        """What a model spec names (reads a GGUF header or the Hub: slow, worker-safe)."""
        from llama_wizard.models.source import resolve_model

        return resolve_model(validate.check_model(spec), quant)

    def fit(self, source: ModelSource, ctx: int | None = None) -> FitReport:
        """Every quant of a model on the planned memory at ctx (worker-safe)."""
        from llama_wizard.models.choose import fit_model

        if ctx is not None:
            ctx = validate.check_ctx(ctx)
        return fit_model(
            source,
            self.devices(),
            ctx,
            host_memory_bytes=self.host_memory(),
            settings=self.launch_settings(),
        )

    def speed_context(self) -> SpeedContext:
        """What every row's speed depends on beside the row (worker-safe): the planned GPUs,
        the flake output and backend (the plan's; before one, the output the build rule
        recommends, without asking Nix), this host's CPU and the measurements on disk now."""
        from llama_wizard.tui.measurements import MeasurementStore, host_cpu_spec
        from llama_wizard.tui.ranking import SpeedContext

        inventory = self._inventory()
        cached = self._cpu_spec
        if cached is None or cached[0] != id(inventory):
            cached = (id(inventory), host_cpu_spec(inventory))
            self._cpu_spec = cached
        output, backend = self._speed_build()
        store = MeasurementStore.load()
        self._notes += [n for n in store.notes if n not in self._notes]
        return SpeedContext(inventory, self.planned_gpus(), output, backend, cached[1], store,
                            self.simulated)  # fmt: skip

    def _speed_build(self) -> tuple[str, str | None]:
        """(flake output, backend) the speeds are for."""
        from llama_wizard.models.choose import backend_for

        if self.plan is not None:
            return self.plan.build.output, self.plan.build.backend
        build = self._assumed_build(gpu_indices=self.choices.gpus, output=self.choices.output)
        if build is None:
            return self.choices.output or "default", backend_for(self.planned_gpus())
        return build.output, build.backend

    def speeds(self, report: FitReport) -> list[Speed | None]:
        """Each quant's speed in its mode (worker-safe): measured on this machine when there is
        a measurement, else predicted; a simulated machine's are predictions only."""
        return self.speed_context().speeds(report)

    def choice_speed(self, choice: ModelChoice) -> Speed | None:
        """The speed of a model choice (the plan's model): from the fit it was taken from; None
        for a choice made without one."""
        if choice.report is None or choice.index is None:
            return None
        return self.speed_context().speed(choice.report, choice.index)

    def ranked(
        self, ctx: int | None = None, sort: str = "score", *, local: bool = True
    ) -> list[RankedModel]:
        """The ranked list (tui/ranking.py): the catalogue and, with `local`, the GGUF files in
        llama.cpp's and the Hugging Face cache, each with its best mode and quant at ctx (each
        model's default context when None) on the planned memory, speed, badge and score, in
        `sort` order (score, speed, size, name). Worker-safe."""
        from llama_wizard.tui.ranking import catalogue_entries, local_entries, rank_entries

        if ctx is not None:
            ctx = validate.check_ctx(ctx)
        entries = catalogue_entries()
        if local:
            notes: list[str] = []
            entries += local_entries(entries, notes)
            self._notes += notes
        context = self.speed_context()
        return rank_entries(entries, lambda source: self.fit(source, ctx), context, sort=sort)

    def model_rows(self, ctx: int | None = None, sort: str = "score") -> list[ModelRow]:
        """The ranked list at ctx on the planned memory, as the faces show it (best first)."""
        from llama_wizard.tui.ranking import BADGE_TEXT, speed_text

        rows = []
        for ranked in self.ranked(ctx or self.default_ctx(), sort):
            best = None if ranked.best is None else ranked.estimate
            rows.append(
                ModelRow(
                    ranked.model,
                    ranked.name,
                    ranked.entry.size_class,
                    None if best is None else best.quant,
                    "no" if best is None else best.verdict,
                    None if best is None else best.mode,
                    None if best is None else best.mode_label,
                    badge=ranked.badge,
                    badge_text=BADGE_TEXT[ranked.badge],
                    speed=ranked.speed,
                    speed_text=speed_text(ranked.speed) if best is not None else "-",
                    score=ranked.score,
                    params_b=ranked.params_b,
                    kind=ranked.entry.kind,
                    cached=ranked.cached,
                )
            )
        return rows

    def preselect(self, report: FitReport, quant: str | None = None) -> int | None:
        """Which quant of a report starts selected: the current choice when it is this model
        and still fits, else the best that fits."""
        quants = [c.quant for c in report.source.candidates]
        current = self.plan.model if self.plan is not None else None
        wanted = quant or (
            current.quant if current is not None and current.repo == _repo(report) else None
        )
        if wanted in quants:
            index = quants.index(wanted)
            if report.quants[index].verdict != "no" or quant is not None:
                return index
        return best_index(report)

    def quant_rows(self, report: FitReport, chosen: int | None) -> list[QuantRow]:
        best = best_index(report)
        speeds = self.speeds(report)
        return [
            QuantRow(i, c.quant, e, i == chosen, i == best, speeds[i])
            for i, (c, e) in enumerate(zip(report.source.candidates, report.quants, strict=True))
        ]

    def choice_at(self, report: FitReport, index: int) -> ModelChoice:
        from llama_wizard.models.choose import choice_from_report

        return choice_from_report(report, index)

    def recommend_model(self, ctx: int | None = None) -> ModelChoice | None:
        """The catalogue's recommendation at ctx on the planned memory (what the plan would
        pick with no model chosen), or None when nothing fits."""
        from llama_wizard.models.choose import recommend

        if ctx is not None:
            ctx = validate.check_ctx(ctx)
        return recommend(
            self.devices(),
            ctx=ctx,
            host_memory_bytes=self.host_memory(),
            settings=self.launch_settings(),
        )

    def is_recommended(self, choice: ModelChoice) -> bool:
        """Whether a choice is the plan's recommendation (it is then saved as such)."""
        return _same_model(choice, self._plan().recommended_model)

    def accept_model(self, choice: ModelChoice, *, confirmed: bool = False) -> None:
        """Take this model, quant and context. One whose estimate says it does not fit raises
        DoesNotFit unless confirmed (the face asks; `--yes` refuses)."""
        plan = self._plan()
        if choice.verdict == "no" and not confirmed:
            raise DoesNotFit(choice)
        plan.model = choice
        if _same_model(choice, plan.recommended_model):
            self.choices.model = self.choices.quant = self.choices.ctx = None
        else:
            self.choices.model, self.choices.quant, self.choices.ctx = (
                choice.repo,
                choice.quant,
                choice.ctx,
            )

    def verify(
        self, choice: ModelChoice | None = None, *, timeout: float = 120.0
    ) -> tuple[FitVerdict, Agreement]:
        """llama.cpp's own word on the plan's model (or `choice`): the built output's
        llama-fit-params, with the launch's environment (worker-safe: it reads only). Raises
        VerifyError (with a fix) when llama.cpp cannot be asked; the estimate still stands."""
        from llama_wizard.tui.verify import SimulatedMachine, VerifyError, compare, verify_fit

        if self.simulated:
            raise SimulatedMachine()
        plan = self._plan()
        choice = choice or plan.model
        if choice is None:
            raise VerifyError(
                "There is no model to check.", "Choose a model first (--model or the Model step)."
            )
        verdict = verify_fit(plan, choice, env=self.machine.env, timeout=timeout)
        return verdict, compare(choice, verdict)

    def check_devices(self, *, timeout: float = 30.0) -> DeviceCheck | None:
        """llama.cpp's own list of devices beside the plan (tui/devices.py): the built binary's
        `--list-devices` with the launch's environment, matched to the chosen GPUs. Kept on the
        plan, so that a Vulkan launch says `--device VulkanN,...` in the plan's GPU order; its
        problems (a ROCm build that sees no GPU, a mask that does not hide the iGPU, identical
        cards that cannot be told apart) are for the face to show before the launch. None for a
        simulated machine (its GPUs are not here) or a build not there yet; a binary that cannot
        answer leaves a note. Worker-safe: one subprocess, and the plan's field."""
        from llama_wizard.tui.devices import DeviceCheckFailed, check_devices, list_devices_binary

        if self.simulated:
            return None
        plan = self._plan()
        if list_devices_binary(plan) is None:
            return None
        # Asked once per build: the answer only changes with the binary (or the hardware).
        build = os.path.realpath(plan.build.out_link)
        if plan.device_check is not None and self._devices_of == build:
            return plan.device_check
        try:
            check = check_devices(plan, self.machine.env, timeout=timeout)
        except DeviceCheckFailed as error:
            self.note(f"{error.message} {error.fix}")
            return None
        plan.device_check, self._devices_of = check, build
        return check

    # --- step 4: the build run -----------------------------------------------------------------

    def build_status(self) -> BuildStatus:
        """Built, running or not built: this flake's build of this output (another flake's
        build of the same output name is not this one)."""
        from llama_wizard.nix.build import build_status
        from llama_wizard.tui.plan import state_dir

        return build_status(state_dir(), self._plan().build)

    def check_can_build(self) -> None:
        """Raise ActionableError (with its fix) when nothing can be built: Nix is missing, set
        up so that every build fails (NixSetupError: no nixbld group as root, no daemon), or
        the state directory cannot record a build. Before a build starts, so nothing is half
        done."""
        from llama_wizard.nix.errors import NixSetupError
        from llama_wizard.tui.plan import ensure_state_dir

        plan = self._plan()
        if plan.nix is None:
            missing = next(w for w in plan.warnings if w.code == "nix_missing")
            raise ActionableError(missing.message, missing.fix)
        if plan.nix.setup_problem is not None:
            # NixSetupError.problem.wizard_can_apply: the face may offer
            # allow_nix_without_build_users and plan again.
            raise NixSetupError(plan.nix.setup_problem)
        ensure_state_dir()

    # --- step 4 too: the model's download ---------------------------------------------------------

    def download_target(self) -> HubTarget | None:
        """The plan's model's Hub files when they must be downloaded before the launch; None
        when there is no model, it is not from the Hub (a .gguf path, a URL), it is in the cache
        already, or the machine is simulated (its model is for hardware that is not here: it is
        not fetched, and the launch keeps llama.cpp's -hf)."""
        from llama_wizard.models.download import cached_paths, hub_target

        plan = self.plan
        if plan is None or plan.model is None or self.simulated:
            return None
        target = hub_target(plan.model)
        if target is None or cached_paths(target) is not None:
            return None
        return target

    def start_download(self) -> DownloadJob | None:
        """The download of the plan's model, running in a thread (UI thread: call it from the
        face, then read the job's progress, result or error). The job already running or done
        for the same files is the one returned (a failed one is started again, and resumes);
        one for another model is stopped. None when nothing is to be downloaded."""
        from llama_wizard.models.download import DownloadJob, hub_target

        job = self._download
        model = self.plan.model if self.plan is not None else None
        done = job is not None and job.result is not None
        if done and model is not None and hub_target(model) == job.target:  # type: ignore[union-attr]
            return job  # done (the file is cached now): the face still says where it is
        target = self.download_target()
        if job is not None and (target is None or job.target != target):
            job.cancel()  # another model now (or nothing to fetch): its part stays, resumable
            self._download = job = None
        if target is None:
            return None
        if job is None or job.error is not None:
            job = self._download = DownloadJob(target).start()
        return job

    @property
    def download_job(self) -> DownloadJob | None:
        """The model download started last (running, done or failed), if any."""
        return self._download

    def stop_download(self) -> None:
        """Stop the running download (its part is kept; the next start resumes it)."""
        if self._download is not None:
            self._download.cancel()

    # --- step 5: the launch --------------------------------------------------------------------

    def set_launch(
        self,
        *,
        program: str | None = None,
        prompt: str | None = None,
        host: str | None = None,
        port: int | str | None = None,
    ) -> None:
        """Validated launch settings (InvalidValue says what is wrong); nothing changes when
        one of them is bad."""
        checked = {
            "program": validate.check_program(program) if program is not None else None,
            "prompt": validate.check_prompt(prompt) if prompt is not None else None,
            "host": validate.check_host(host) if host is not None else None,
            "port": validate.check_port(port) if port is not None else None,
        }
        for name, value in checked.items():
            if value is not None:
                setattr(self.choices, name, value)

    def launch_spec(self, program: str | None = None, *, check_built: bool = True) -> LaunchSpec:
        from llama_wizard.tui.launch import launch_spec

        choices = self.choices
        return launch_spec(
            self._plan(),
            program=program or choices.program,
            prompt=choices.prompt,
            n_predict=choices.n_predict,
            host=choices.host,
            port=choices.port,
            check_built=check_built,
        )

    def server_url(self) -> str:
        from llama_wizard.tui.launch import server_url

        return server_url(self.choices.host, self.choices.port)

    def record_timing(self, timing: Any, program: str) -> list[str]:
        """Remember the speeds llama.cpp printed in a launch of the plan's model on this machine
        (tui/measurements.py); the notes to show (why nothing was recorded, a file set aside).
        Safe from a worker thread: it only reads the plan and writes the state file."""
        from llama_wizard.tui.measurements import record_launch

        plan = self.plan
        if plan is None:
            return []
        _recorded, notes = record_launch(plan, timing, program)
        return notes

    # --- step 6: done --------------------------------------------------------------------------

    def commands(self) -> list[Command]:
        """The commands to do it again by hand; only the build when there is no model yet."""
        from llama_wizard.tui import commands

        plan = self._plan()
        choices = self.choices
        try:
            spec = self.launch_spec(check_built=False)
            return commands.commands_for(plan, spec, host=choices.host, port=choices.port)
        except ActionableError as error:  # no model; an API key that cannot be kept
            self.note(f"{error.message} {error.fix}")
            return [commands.build_command(plan)]

    def api_key_note(self) -> str | None:
        """Why llama-server requires an API key and where it is, when the chosen host is
        reachable from other machines (every face shows it with the server); else None."""
        from llama_wizard.tui.apikey import is_loopback, key_note

        host = self.choices.host
        return None if is_loopback(host) else key_note(host)

    def service_unit(self, *, check_built: bool = True) -> ServiceUnit:
        """The systemd unit that keeps this llama-server running (tui/service.py) on the chosen
        host and port. Raises LaunchError (no model, not built) or ServiceError."""
        from llama_wizard.tui.service import service_unit

        spec = self.launch_spec("llama-server", check_built=check_built)
        return service_unit(self._plan(), spec, self.choices.host, self.choices.port)

    def is_nixos(self) -> bool:
        """This machine runs NixOS: a service is the module's snippet, not a unit file."""
        plan = self._plan()
        return plan.nix is not None and plan.nix.is_nixos

    def nixos_service(self) -> Command | None:
        """The Done step's `services.llama-server` snippet (None: the flake has no module)."""
        from llama_wizard.tui.commands import nixos_command

        spec = self.launch_spec(check_built=False)
        return nixos_command(self._plan(), spec, self.choices.host, self.choices.port)

    @staticmethod
    def default_commands_path() -> Path:
        """Where the Done step's commands are saved unless the person types another path, in
        every face: the current directory, where the person started the wizard and looks for
        what it made (as `nix build` leaves ./result there); when that cannot be written (/ or
        a read-only checkout), the wizard's XDG data directory (~/.local/share/llama-wizard)."""
        import os

        try:
            here = Path.cwd()
        except OSError:  # the directory was deleted under the wizard
            here = None
        if here is not None and os.access(here, os.W_OK | os.X_OK):
            return here / COMMANDS_FILE_NAME
        from platformdirs import user_data_dir

        return Path(user_data_dir("llama-wizard")) / COMMANDS_FILE_NAME

    def save_commands(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Raises CommandsFileExists when the file is there and overwrite is False (the face
        asks first), ActionableError when it cannot be written."""
        from llama_wizard.tui.commands import save_commands

        target = Path(path).expanduser()
        if target == self.default_commands_path():
            # The data directory default may not exist yet (a path typed by the person is
            # taken as typed: a missing directory there is more likely a typo).
            with contextlib.suppress(OSError):  # save_commands says why it cannot write
                target.parent.mkdir(parents=True, exist_ok=True)
        return save_commands(self.commands(), target, overwrite=overwrite)

    # --- saving --------------------------------------------------------------------------------

    def save(self) -> str | None:
        """Save this machine's choices; a message when they could not be saved (the run goes
        on with them), else None."""
        if self.store is None or self._machine_key is None:
            return None
        key, label = self._machine_key
        self.store.put(key, label, self.choices)
        try:
            self.store.save()
        except SettingsNotSaved as error:
            return f"{error.message} {error.fix}"
        return None

    def forget_choices(self) -> None:
        """The person asked to reset: back to the recommendations (the file is reset by the
        caller with tui.settings.reset_settings)."""
        self.choices = Choices()
        if self.store is not None:
            self.store.machines.clear()
            self.store.legacy = None
        self.plan = None
        if self.inventory is not None:
            self._apply_overrides()  # what the command line named still holds


def _nix_setup_warnings(plan: Plan, without_build_users: bool) -> list[PlanWarning]:
    """Nix's setup problem, first among the plan's warnings; or, when the person agreed to get
    round a missing build-users group, that the wizard does so (and the lasting fix)."""
    from llama_wizard.nix.environment import BUILD_USERS_OFF
    from llama_wizard.nix.recommend import PlanWarning

    if plan.nix is None:
        return []
    problem = plan.nix.setup_problem
    if problem is not None:
        return [PlanWarning(problem.code, problem.message, problem.fix)]
    if without_build_users:
        return [
            PlanWarning(
                "nix_without_build_users",
                f"llama-wizard runs its nix commands with `{BUILD_USERS_OFF}` (you agreed): "
                "builds run as root, without Nix's build users.",
                "For your own nix commands too: `sudo apt install nix-setup-systemd` (Debian/"
                "Ubuntu: creates the nixbld group and users), or add the line "
                f"`{BUILD_USERS_OFF}` to /etc/nix/nix.conf.",
            )
        ]
    return []


def _repo(report: FitReport) -> str:
    return report.source.repo or report.source.spec


def _same_model(choice: ModelChoice, other: ModelChoice | None) -> bool:
    return other is not None and (choice.repo, choice.quant, choice.ctx) == (
        other.repo,
        other.quant,
        other.ctx,
    )


def _same_flake(ref: str, other: str) -> bool:
    from llama_wizard.nix.flake import normalize_ref

    return ref == other or normalize_ref(ref) == normalize_ref(other)


def describe_choice(choice: Any) -> str:
    """ "fits" / "fits, tightly" / "does NOT fit", as both faces word a verdict."""
    return {"fits": "fits", "tight": "fits, tightly", "no": "does NOT fit"}.get(
        choice.verdict, choice.verdict
    )
