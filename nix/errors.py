"""Errors from nix/: each says what went wrong and what the person can do about it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_wizard.detect.errors import ActionableError

if TYPE_CHECKING:
    from llama_wizard.nix.environment import SetupProblem


class NixError(ActionableError):
    """Raised by nix/."""


class NixNotFound(NixError):
    def __init__(self) -> None:
        super().__init__(
            "Nix is not installed (no `nix` on PATH).",
            "Install it: on Debian/Ubuntu `sudo apt install nix-bin` (then add yourself to the "
            "nix-users group), or the multi-user installer from nixos.org "
            "(`sh <(curl -L https://nixos.org/nix/install) --daemon`).",
        )


class FlakeError(NixError):
    """The flake could not be read or evaluated."""


class FlakeUnreachable(FlakeError):
    """The flake could not be fetched: no network, no DNS, a download that timed out."""

    def __init__(self, ref: str, reason: str) -> None:
        super().__init__(
            f"The flake {ref} could not be fetched ({reason}): is this machine offline?",
            offline_fix(ref),
        )
        self.ref = ref


def clone_url(ref: str) -> str | None:
    """Where `git clone` gets a GitHub flake: github:OWNER/REPO[/REV] -> https://github.com/OWNER/REPO."""
    if not ref.startswith("github:"):
        return None
    parts = ref.removeprefix("github:").split("#", 1)[0].split("?", 1)[0].split("/")
    return f"https://github.com/{parts[0]}/{parts[1]}" if len(parts) >= 2 else None


def offline_fix(ref: str) -> str:
    """What to do when a flake cannot be downloaded: build from a local checkout."""
    url = clone_url(ref) or "https://github.com/ggml-org/llama.cpp"
    return (
        f"Use a local checkout of llama.cpp as the flake: `git clone {url}` (here once the "
        "network is back, or elsewhere and copy it over), then `--flake path:/path/to/llama.cpp` "
        "(or that path in the wizard's Flake field). Building it still needs its inputs "
        "(nixpkgs) from the network or the Nix store. Or connect and try again."
    )


class NixSetupError(NixError):
    """Nix is set up so that no build can run (nix/environment.py SetupProblem)."""

    def __init__(self, problem: SetupProblem) -> None:
        super().__init__(problem.message, problem.fix)
        self.problem = problem
