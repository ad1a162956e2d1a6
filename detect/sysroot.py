"""Every read of /sys, /dev and /proc goes through a SystemRoot, so tests and simulations can
point detection at a fixture tree instead of the machine's own files."""

from __future__ import annotations

import os
from pathlib import Path

from llama_wizard.detect.errors import ActionableError, ProfileError

ROOT_ENV = "LLAMA_WIZARD_ROOT"
# What a system root has: detection reads these (a tree with none of them would detect "0
# cores, 0 B RAM" and look like a machine without GPUs).
ROOT_MARKERS = ("sys", "proc", "dev")


class RootError(ActionableError, ProfileError):
    """--root (or LLAMA_WIZARD_ROOT) names no system root. A ProfileError too: like an unknown
    --simulate profile, it names no machine to detect (the command line exits 2)."""


def check_root(root: str | os.PathLike[str], where: str = "--root") -> Path:
    """root as a Path when it looks like a system root: a directory holding sys/, proc/ or
    dev/. Raises RootError saying what it is instead and what to give."""
    path = Path(root).expanduser()
    named = f"{where}={path}" if where == ROOT_ENV else f"{where} {path}"
    fix = (
        f"Give {where} a directory that holds a machine's /sys and /proc (a copy or a mounted "
        "system), or leave it out to detect this machine."
    )
    if not path.exists():
        raise RootError(f"{named}: there is no such directory.", fix)
    if not path.is_dir():
        raise RootError(f"{named}: a file, not a directory that stands for /.", fix)
    if not any((path / marker).is_dir() for marker in ROOT_MARKERS):
        raise RootError(
            f"{named}: not a system root (it has no sys/, proc/ or dev/ directory).",
            fix,
        )
    return path


class SystemRoot:
    """A directory that stands for `/`. Reads never raise: a missing or unreadable file is None."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root).resolve()

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> SystemRoot:
        """The root named (--root), else LLAMA_WIZARD_ROOT's, else /. A named root that is no
        system root raises RootError."""
        if root:
            return cls(check_root(root))
        named = os.environ.get(ROOT_ENV)
        if named:
            return cls(check_root(named, ROOT_ENV))
        return cls("/")

    @property
    def is_host(self) -> bool:
        """True when this is the machine's real root, where libudev and psutil can be used."""
        return self.root == Path("/")

    def path(self, absolute: str | os.PathLike[str]) -> Path:
        return self.root / str(absolute).lstrip("/")

    def read_text(self, absolute: str | os.PathLike[str], limit: int = 1 << 20) -> str | None:
        try:
            with open(self.path(absolute), "rb") as handle:
                data = handle.read(limit)
        except (OSError, ValueError):
            return None
        return data.decode("utf-8", errors="replace").replace("\x00", "")

    def read_attr(self, absolute: str | os.PathLike[str]) -> str | None:
        """A one-line sysfs attribute, stripped; None when absent or empty."""
        text = self.read_text(absolute, limit=4096)
        if text is None:
            return None
        text = text.strip()
        return text or None

    def read_int(self, absolute: str | os.PathLike[str], base: int = 10) -> int | None:
        value = self.read_attr(absolute)
        if value is None:
            return None
        try:
            return int(value, base)
        except ValueError:
            return None

    def listdir(self, absolute: str | os.PathLike[str]) -> list[str]:
        try:
            return sorted(os.listdir(self.path(absolute)))
        except OSError:
            return []

    def exists(self, absolute: str | os.PathLike[str]) -> bool:
        return os.path.lexists(self.path(absolute))

    def link_name(self, absolute: str | os.PathLike[str]) -> str | None:
        """The last path element a symlink points at (a bound driver's name, say)."""
        try:
            return os.path.basename(os.readlink(self.path(absolute)).rstrip("/")) or None
        except OSError:
            return None

    def real_name(self, absolute: str | os.PathLike[str]) -> str | None:
        """The final directory name after resolving links (a DRM node's PCI address)."""
        target = self.path(absolute)
        if not os.path.lexists(target):
            return None
        try:
            resolved = Path(os.path.realpath(target))
        except (OSError, ValueError):
            return None
        return resolved.name or None
