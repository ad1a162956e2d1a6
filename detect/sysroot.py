"""Every read of /sys, /dev and /proc goes through a SystemRoot, so tests and simulations can
point detection at a fixture tree instead of the machine's own files."""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "LLAMA_WIZARD_ROOT"


class SystemRoot:
    """A directory that stands for `/`. Reads never raise: a missing or unreadable file is None."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root).resolve()

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> SystemRoot:
        return cls(root or os.environ.get(ROOT_ENV) or "/")

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
