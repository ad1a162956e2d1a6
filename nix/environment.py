"""The Nix installation: whether `nix` exists, its version, whether flakes are enabled, whether
the host is NixOS (which decides how CUDA and Vulkan builds find the GPU driver), and whether a
build can run at all (Nix's build users, its daemon).

Debian's `nix-bin` alone (without `nix-setup-systemd`) has neither the `nixbld` group that Nix's
default `build-users-group = nixbld` names nor a daemon: as root every build then fails with
"the group 'nixbld' specified in 'build-users-group' does not exist". That is found here, before
anything is built, with the fix; `without_build_users` is the wizard's own way round it (for its
own nix commands, when the person agrees)."""

from __future__ import annotations

import grp
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.detect.tools import ToolNotFound, ToolTimeout, run_tool
from llama_wizard.nix.errors import NixError, NixNotFound

EXTRA_FEATURES = ("--extra-experimental-features", "nix-command flakes")
DRIVER_LIB_DIR = "/run/opengl-driver/lib"
NIX_STATE_DIR = "/nix/var/nix"
DAEMON_SOCKET = "/nix/var/nix/daemon-socket/socket"
BUILD_USERS_OFF = "build-users-group ="
# Debian's nix-setup-systemd postinst, which creates what Nix's defaults expect.
CREATE_BUILD_USERS = (
    "groupadd --system nixbld && for n in $(seq 1 10); do useradd --system --no-create-home "
    "--home-dir /var/empty --gid nixbld --groups nixbld --shell /usr/sbin/nologin nixbld$n; done"
)


@dataclass(frozen=True)
class SetupProblem:
    """Why no build can run with this Nix as it is set up, and the fix. `wizard_can_apply`:
    the wizard can get round it for its own nix commands (without_build_users) when the
    person agrees."""

    code: str
    message: str
    fix: str
    wizard_can_apply: bool = False


def without_build_users(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with NIX_CONFIG saying `build-users-group =` (builds run as the calling user, root,
    without Nix's build users); every other NIX_CONFIG line is kept."""
    config = env.get("NIX_CONFIG", "")
    lines = [
        line
        for line in config.splitlines()
        if line.partition("=")[0].strip() != "build-users-group"
    ]
    return {**env, "NIX_CONFIG": "\n".join([*lines, BUILD_USERS_OFF]) + "\n"}


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def build_users_problem(group: str) -> SetupProblem:
    """Root using the store directly, and `build-users-group` names a group that is not there."""
    return SetupProblem(
        "build_users_group_missing",
        f"Every build would fail: Nix is set to build as the users of the group '{group}' "
        "(its build-users-group setting), and there is no such group here, as on Debian "
        "with nix-bin alone and no daemon (Nix says \"the group "
        f"'{group}' specified in 'build-users-group' does not exist\").",
        "Create Nix's build users: `sudo apt install nix-setup-systemd` on Debian/Ubuntu "
        "(it adds the nixbld group and users and starts nix-daemon), or by hand "
        f"`{CREATE_BUILD_USERS}`. Or, on a machine only root builds on, build as root: add "
        f"the line `{BUILD_USERS_OFF}` to /etc/nix/nix.conf. Or let llama-wizard run its own "
        "nix commands that way (the Build step offers it; `--nix-without-build-users` on "
        "the command line).",
        wizard_can_apply=True,
    )


def setup_problem(
    config: Mapping[str, str],
    *,
    env: Mapping[str, str],
    euid: int | None = None,
    group_exists: Callable[[str], bool] = _group_exists,
    exists: Callable[[str], bool] = os.path.exists,
    writable: Callable[[str], bool] = lambda path: os.access(path, os.W_OK),
) -> SetupProblem | None:
    """What stops every build with this configuration (`nix show-config` as a mapping), as Nix
    2.8 decides it: with `store = auto` Nix uses the store directly when it may write
    /nix/var/nix (root), else the daemon's socket when there is one. Only a direct store as root
    uses build users, so only then must `build-users-group` name a group that exists."""
    euid = os.geteuid() if euid is None else euid
    store = (env.get("NIX_REMOTE") or config.get("store") or "auto").strip() or "auto"
    if store == "auto":
        direct = writable(NIX_STATE_DIR) or not exists(DAEMON_SOCKET)
    else:
        direct = store in ("local",) or store.startswith(("/", "local?", "local://"))
    group = config.get("build-users-group", "").strip()
    if direct and euid == 0 and group and not group_exists(group):
        return build_users_problem(group)
    if store == "auto" and euid != 0 and not writable(NIX_STATE_DIR):
        if not exists(DAEMON_SOCKET):
            return SetupProblem(
                "nix_daemon_not_running",
                f"Nix cannot build: its daemon is not running (there is no {DAEMON_SOCKET}) and "
                f"only root may use the store ({NIX_STATE_DIR}) directly.",
                "Start the daemon: `sudo apt install nix-setup-systemd` on Debian/Ubuntu (it "
                "installs and starts it), or `sudo systemctl enable --now nix-daemon.socket "
                "nix-daemon.service`; then `sudo usermod -aG nix-users $USER` and log in again.",
            )
        if not writable(DAEMON_SOCKET):
            return SetupProblem(
                "nix_daemon_no_access",
                f"Nix cannot build: you may not talk to its daemon ({DAEMON_SOCKET}).",
                "Add yourself to the group that may: `sudo usermod -aG nix-users $USER`, then "
                "log in again (or run `newgrp nix-users`).",
            )
    return None


@dataclass(frozen=True)
class NixEnvironment:
    version: str
    nix_command_enabled: bool
    flakes_enabled: bool
    is_nixos: bool
    driver_dir_present: bool
    system: str = "x86_64-linux"
    notes: tuple[str, ...] = field(default_factory=tuple)
    # What stops every build with this setup (a missing nixbld group, no daemon), if anything.
    setup_problem: SetupProblem | None = None

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


def _settings(config_text: str) -> dict[str, str]:
    """`nix show-config`'s `name = value` lines."""
    settings = {}
    for line in config_text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.strip()] = value.strip()
    return settings


def _features(config_text: str) -> set[str]:
    return set(_settings(config_text).get("experimental-features", "").split())


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
    settings = _settings(config.stdout)
    system = settings.get("system") or "x86_64-linux"
    problem = (
        setup_problem(settings, env=os.environ if env is None else env) if config.ok else None
    )
    return NixEnvironment(
        version=version,
        nix_command_enabled=nix_command,
        flakes_enabled="flakes" in features,
        is_nixos=root.exists("/etc/NIXOS"),
        driver_dir_present=root.exists(DRIVER_LIB_DIR),
        system=system,
        setup_problem=problem,
    )
