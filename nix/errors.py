"""Errors from nix/: each says what went wrong and what the person can do about it."""

from __future__ import annotations


class NixError(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n{self.fix}"


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
