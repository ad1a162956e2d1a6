"""Errors from nix/: each says what went wrong and what the person can do about it."""

from __future__ import annotations

from llama_wizard.detect.errors import ActionableError


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
