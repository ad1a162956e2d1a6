"""Choices remembered between runs (the XDG config directory), for the wizard and plain mode.

Written whole to a temporary file and renamed, so a crash mid-write never leaves half a file; a
file that cannot be read is set aside (never deleted) and the wizard starts from defaults."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir

SETTINGS_VERSION = 1


def settings_path() -> Path:
    return Path(user_config_dir("llama-wizard")) / "settings.json"


@dataclass
class Settings:
    flake: str | None = None
    output: str | None = None
    gpus: list[int] | None = None
    model: str | None = None
    quant: str | None = None
    ctx: int | None = None
    program: str = "llama-completion"
    prompt: str = "The capital of France is"
    n_predict: int = 128
    host: str = "127.0.0.1"
    port: int = 8080
    version: int = SETTINGS_VERSION
    notes: list[str] = field(default_factory=list)  # what happened while loading, for the UI

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        path = path or settings_path()
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as error:
            kept = _set_aside(path)
            settings = cls()
            settings.notes.append(
                f"Saved choices in {path} could not be read ({error}); they were kept as {kept} "
                "and defaults are used."
            )
            return settings
        known = {f.name for f in fields(cls)} - {"notes"}
        settings = cls()
        for key, value in data.items():
            if key in known:
                setattr(settings, key, value)
        return settings

    def save(self, path: Path | None = None) -> None:
        path = path or settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "notes"}
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(document, indent=1))
        temporary.replace(path)


def _set_aside(path: Path) -> Path:
    kept = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        path.replace(kept)
    except OSError:
        return path
    return kept


def reset_settings(path: Path | None = None) -> Path | None:
    """Forget the saved choices; the old file is kept beside it as a backup. Returns it."""
    path = path or settings_path()
    if not path.exists():
        return None
    backup = path.with_name(f"{path.name}.bak")
    path.replace(backup)
    return backup
