"""The error type the libraries (detect/, nix/, models/) raise: what went wrong, and what a
person can do about it. The CLI prints both; the screens show both."""

from __future__ import annotations


class ActionableError(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n{self.fix}"


class ChoiceError(ActionableError):
    """A choice the person made that cannot work (a GPU that is not there, a flake output the
    flake lacks), with what to do instead."""


class ProfileError(ValueError):
    """The machine to detect cannot be used: a bundled hardware profile that does not exist or
    cannot be read (`--simulate`), or a root directory that is no system root (`--root`)."""
