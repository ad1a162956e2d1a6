"""The Plan: the inventory, the build choice (and, later, the model choice) turned into the
commands the wizard runs and shows."""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platformdirs import user_state_dir

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.model import DetectionWarning, Inventory
from llama_wizard.nix import environment
from llama_wizard.nix.catalogue import CATALOGUE, UPSTREAM_PACKAGES
from llama_wizard.nix.environment import NixEnvironment
from llama_wizard.nix.errors import FlakeError, NixError, NixNotFound
from llama_wizard.nix.flake import (
    UPSTREAM_FLAKE,
    FlakeOutputs,
    default_flake_ref,
    normalize_ref,
    query_outputs,
)
from llama_wizard.nix.recommend import BuildChoice, PlanWarning, nix_system, recommend
from llama_wizard.tui.machine import Machine

if TYPE_CHECKING:
    from llama_wizard.models.choose import ModelChoice
    from llama_wizard.tui.devices import DeviceCheck


def state_dir() -> Path:
    return Path(user_state_dir("llama-wizard"))


class StateDirUnusable(ActionableError):
    """Builds cannot be recorded: the state directory cannot be created or written."""


def ensure_state_dir() -> Path:
    """The state directory, ready for a build's logs and result link. Raises StateDirUnusable
    naming the directory and the fix (before anything starts, so nothing is half done)."""
    directory = state_dir()
    builds = directory / "builds"
    try:
        builds.mkdir(parents=True, exist_ok=True)
        probe = builds / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise StateDirUnusable(
            f"Builds cannot be recorded in {builds}: {error.strerror or error}.",
            "Make that directory writable, or point XDG_STATE_HOME at a writable directory "
            "(for example `export XDG_STATE_HOME=$HOME/.local/state`), then build again.",
        ) from None
    return directory


@dataclass
class Plan:
    inventory: Inventory
    build: BuildChoice
    nix: NixEnvironment | None
    flake_outputs: FlakeOutputs
    warnings: list[PlanWarning] = field(default_factory=list)
    model: ModelChoice | None = None
    recommended_model: ModelChoice | None = None
    # llama.cpp's own list of devices, once the build was asked (tui/devices.py): the Vulkan
    # launch's `--device`, and what does not match the chosen GPUs.
    device_check: DeviceCheck | None = None

    def shell_command(self) -> str:
        """The build as a person would type it (quoted for a POSIX shell)."""
        return shlex.join(self.build.build_argv)

    def launch_args(self) -> list[str]:
        """The model's part of the launch command, exactly as launching uses it."""
        from llama_wizard.tui.launch import model_args

        return model_args(self)

    def to_json(self) -> dict[str, Any]:
        build = self.build
        return {
            "flake": build.flake,
            "system": build.system,
            "output": build.output,
            "backend": build.backend,
            "build_argv": build.build_argv,
            "out_link": build.out_link,
            "env": build.env,
            "unset_env": build.unset_env,
            "gpus": build.gpus,
            "rocm_targets": build.rocm_targets,
            "recommended_output": build.recommended_output,
            "reasons": build.reasons,
            "alternatives": [asdict(a) for a in build.alternatives],
            "costs": build.costs,
            "warnings": [
                asdict(w)
                for w in [
                    *self.warnings,
                    *build.warnings,
                    *detection_warnings_as_plan(self.inventory.warnings),
                ]
            ],
            "nix": None
            if self.nix is None
            else {
                "version": self.nix.version,
                "flakes_enabled": self.nix.flakes_enabled and self.nix.nix_command_enabled,
                "nixos": self.nix.is_nixos,
            },
            "flake_outputs": {
                "packages": self.flake_outputs.packages,
                "apps": self.flake_outputs.apps,
                "dev_shells": self.flake_outputs.dev_shells,
                "nixos_modules": self.flake_outputs.nixos_modules,
                "overlays": self.flake_outputs.overlays,
                "from_cache": self.flake_outputs.from_cache,
                "revision": self.flake_outputs.revision,
            },
            "model": None
            if self.model is None
            else {**self.model.to_json(), "launch_args": self.launch_args()},
            **({"simulated": self.inventory.simulated} if self.inventory.simulated else {}),
            **({"devices": self.device_check.to_json()} if self.device_check else {}),
        }


def assumed_outputs(ref: str, system: str) -> FlakeOutputs:
    if ref == UPSTREAM_FLAKE:
        packages = list(UPSTREAM_PACKAGES)
    else:
        packages = sorted({o.name for o in CATALOGUE if o.kind == "package"})
    return FlakeOutputs(ref=ref, system=system, packages=packages)


def make_plan(
    machine: Machine,
    inventory: Inventory,
    *,
    flake_ref: str | None = None,
    output: str | None = None,
    gpu_indices: list[int] | None = None,
    model: str | None = None,
    quant: str | None = None,
    ctx: int | None = None,
    nix_timeout: float = 600.0,
    flash_attn: str | None = None,
    n_parallel: int | None = None,
    mode: str | None = None,
    memory: str | None = None,
) -> Plan:
    """`flash_attn` (-fa on|off|auto, default auto) and `n_parallel` (llama-server -np N) are
    what the model's memory estimate assumes; auto is resolved for the build's backend. `mode`
    (gpu, moe-offload, hybrid, cpu; default auto: the best each quant runs in) is the run mode.

    Raises NixError (a flake the person named cannot be read), ChoiceError, or ModelError
    (a model the person named cannot be read)."""
    warnings: list[PlanWarning] = []
    system = nix_system(inventory)
    ref = normalize_ref(flake_ref) if flake_ref else default_flake_ref()
    nix_env: NixEnvironment | None
    try:
        nix_env = environment.probe(machine.root, env=machine.env)
    except NixNotFound as error:
        nix_env = None
        warnings.append(PlanWarning("nix_missing", error.message, error.fix))
    if nix_env is None:
        outputs = assumed_outputs(ref, system)
        warnings.append(
            PlanWarning(
                "flake_outputs_assumed",
                f"Without Nix the flake cannot be asked what it has; assuming the outputs "
                f"{'upstream llama.cpp' if ref == UPSTREAM_FLAKE else 'the documented flake'} "
                "offers.",
                "Install Nix and plan again to check.",
            )
        )
    else:
        try:
            outputs = query_outputs(ref, system, nix_env, env=machine.env, timeout=nix_timeout)
        except FlakeError as error:
            if flake_ref:
                raise
            outputs = assumed_outputs(ref, system)
            warnings.append(PlanWarning("flake_unreachable", error.message, error.fix))
    build = recommend(
        inventory, outputs, nix_env, state_dir(), output=output, gpu_indices=gpu_indices
    )
    from llama_wizard.models.choose import (  # loads gguf/numpy
        LaunchSettings,
        devices_for,
        plan_model,
    )

    chosen_gpus = [g for g in inventory.gpus if g.index in build.gpus]
    from llama_wizard.detect.memory import memory_note

    for gpu in chosen_gpus:  # memory other processes hold (detect/memory.py: auto|total|free)
        if note := memory_note(gpu, memory or "auto"):
            warnings.append(
                PlanWarning(
                    "memory_in_use",
                    note,
                    "Stop those processes, or choose what to plan on with --memory total|free.",
                )
            )
    model_plan = plan_model(
        devices_for(chosen_gpus, inventory, memory or "auto"),
        model=model,
        quant=quant,
        ctx=ctx,
        host_memory_bytes=inventory.memory_available_bytes or None,
        settings=LaunchSettings(flash_attn or "auto", n_parallel, build.backend, mode or "auto"),
    )
    model_choice = model_plan.choice
    if model_choice is None:
        warnings.append(
            PlanWarning(
                "no_model_fits",
                "No model of the catalogue fits "
                + ("these GPUs" if chosen_gpus else "this machine's free RAM")
                + (f" (asked for {model})" if model else "")
                + ".",
                "Try a smaller quant or context (`llama-wizard fit MODEL`), or run on the CPU.",
            )
        )
    elif model_choice.verdict == "no":
        warnings.append(
            PlanWarning(
                "model_does_not_fit",
                f"{model_choice.name} {model_choice.quant} at {model_choice.ctx} tokens needs "
                f"{model_choice.total_bytes / (1 << 30):.1f} GiB of the "
                f"{model_choice.memory_bytes / (1 << 30):.1f} GiB there: it does NOT fit.",
                "Choose a smaller quant or context (`llama-wizard fit "
                f"{model_choice.repo}` lists what fits).",
            )
        )
    return Plan(inventory=inventory, build=build, nix=nix_env, flake_outputs=outputs,
                warnings=warnings, model=model_choice,
                recommended_model=model_plan.recommendation)  # fmt: skip


def detection_warnings_as_plan(warnings: list[DetectionWarning]) -> list[PlanWarning]:
    return [PlanWarning(w.code, w.message, w.fix) for w in warnings]


__all__ = ["NixError", "Plan", "StateDirUnusable", "ensure_state_dir", "make_plan", "state_dir"]
