"""The Nix installation: whether `nix` exists, its version, whether flakes are enabled, and
whether the host is NixOS (which decides how CUDA and Vulkan builds find the GPU driver)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.detect.tools import ToolNotFound, ToolTimeout, run_tool
from llama_wizard.nix.errors import NixError, NixNotFound

EXTRA_FEATURES = ("--extra-experimental-features", "nix-command flakes")
DRIVER_LIB_DIR = "/run/opengl-driver/lib"


@dataclass(frozen=True)
class NixEnvironment:
    version: str
    nix_command_enabled: bool
    flakes_enabled: bool
    is_nixos: bool
    driver_dir_present: bool
    system: str = "x86_64-linux"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def needs_feature_flag(self) -> bool:
        return not (self.nix_command_enabled and self.flakes_enabled)

    def nix_argv(self, *args: str) -> list[str]:
        """A `nix` command line, with the experimental-features flag when this Nix needs it."""
        prefix = ["nix", *EXTRA_FEATURES] if self.needs_feature_flag else ["nix"]
        return [*prefix, *args]

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", self.version)[:3])


def _features(config_text: str) -> set[str]:
    for line in config_text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "experimental-features":
            return set(value.split())
    return set()


def probe(
    root: SystemRoot | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
) -> NixEnvironment:
    """Ask the installed Nix about itself. Raises NixNotFound or NixError with a fix."""
    root = root or SystemRoot("/")
    try:
        version_result = run_tool(["nix", "--version"], timeout=timeout, env=env)
    except ToolNotFound:
        raise NixNotFound() from None
    except ToolTimeout as error:
        raise NixError(str(error), "Check that the Nix daemon is running.") from None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?\S*)", version_result.stdout)
    version = match.group(1) if match else version_result.stdout.strip() or "unknown"

    # `nix show-config` itself needs nix-command; its text form is the same on 2.8 and today
    # (the JSON form encodes features as numbers on 2.8).
    config = run_tool(["nix", "show-config"], timeout=timeout, env=env)
    if config.ok:
        features = _features(config.stdout)
        nix_command = "nix-command" in features
    else:
        if "nix-command" not in config.output:
            raise NixError(
                f"`nix show-config` failed: {config.output.strip()[:200]}",
                "Check your Nix configuration (/etc/nix/nix.conf, NIX_CONFIG).",
            )
        config = run_tool(["nix", *EXTRA_FEATURES, "show-config"], timeout=timeout, env=env)
        features, nix_command = set(), False
    system = "x86_64-linux"
    for line in config.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "system":
            system = value.strip() or system
    return NixEnvironment(
        version=version,
        nix_command_enabled=nix_command,
        flakes_enabled="flakes" in features,
        is_nixos=root.exists("/etc/NIXOS"),
        driver_dir_present=root.exists(DRIVER_LIB_DIR),
        system=system,
    )
