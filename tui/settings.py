"""Choices remembered between runs, per machine (`$XDG_CONFIG_HOME/llama-wizard/settings.json`).

A choice made on one machine says nothing about another, so the file keeps one set of choices
per machine, keyed by a fingerprint of its GPUs (vendor, name, memory, PCI ids); a `--simulate`
profile keeps its own set under `simulated:NAME` and never touches the real machine's.

    {"version": 2,
     "machines": {"gpus:3f9a…": {"label": "2x AMD Instinct MI50", "gpus": null, "quant": "Q5_K_M",
                                 ...},
                  "simulated:rtx4090": {...}}}

A value of null means "the recommendation", so a choice equal to it follows it when the
recommendation changes. Every field is checked on load (tui/validate.py): a bad one is dropped
with a note naming it, the rest kept. The file is written whole to a temporary file and renamed,
so a crash mid-write never leaves half a file; a file that cannot be read is set aside (never
deleted) and the wizard starts from defaults. Version 1 files (one set of choices for whatever
machine) are migrated to the first real machine that opens them."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llama_wizard.detect.errors import ActionableError
from llama_wizard.tui import validate

SETTINGS_VERSION = 2
DEFAULT_PROMPT = "The capital of France is"


def config_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir("llama-wizard"))


def settings_path() -> Path:
    return config_dir() / "settings.json"


class SettingsNotSaved(ActionableError):
    """The choices could not be written (an unwritable or misplaced config directory)."""


@dataclass
class Choices:
    """One machine's choices. None: the recommendation."""

    flake: str | None = None
    output: str | None = None
    gpus: list[int] | None = None
    model: str | None = None
    quant: str | None = None
    ctx: int | None = None
    program: str = "llama-completion"
    prompt: str = DEFAULT_PROMPT
    n_predict: int = 128
    host: str = "127.0.0.1"
    port: int = 8080
    # The person agreed that the wizard's nix commands run with `build-users-group =` (root
    # without a nixbld group: nix/environment.py).
    nix_without_build_users: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise validate.InvalidValue(f"{value!r} is not true or false.", "")
    return value


# Each field's check; those that may be null (the recommendation) say so.
_CHECKS: dict[str, tuple[Any, bool]] = {
    "flake": (validate.check_flake, True),
    "output": (validate.check_output, True),
    "gpus": (validate.check_gpus, True),
    "model": (validate.check_model, True),
    "quant": (validate.check_quant, True),
    "ctx": (validate.check_ctx, True),
    "program": (validate.check_program, False),
    "prompt": (validate.check_prompt, False),
    "n_predict": (validate.check_n_predict, False),
    "host": (validate.check_host, False),
    "port": (validate.check_port, False),
    "nix_without_build_users": (_check_flag, False),
}
FIELDS = tuple(f.name for f in fields(Choices))


def choices_from_json(data: Any, where: str, notes: list[str]) -> Choices:
    """Choices from a loaded JSON object; each bad field is dropped with a note in `notes`."""
    choices = Choices()
    if not isinstance(data, dict):
        notes.append(f"Saved choices for {where} are not a JSON object; defaults are used.")
        return choices
    for name in FIELDS:
        if name not in data:
            continue
        value = data[name]
        check, nullable = _CHECKS[name]
        if value is None and nullable:
            continue
        try:
            # Saved values are what the wizard wrote: the text forms argparse takes ("0,1",
            # "8192") are not accepted here, only the JSON types.
            if name in ("ctx", "n_predict", "port") and not isinstance(value, int):
                raise validate.InvalidValue(f"{value!r} is not a whole number.", "")
            if name == "gpus" and not isinstance(value, list):
                raise validate.InvalidValue(f"{value!r} is not a list of GPU indices.", "")
            setattr(choices, name, check(value))
        except validate.InvalidValue as error:
            notes.append(
                f"The saved {name} for {where} was dropped: {error.message.rstrip('.')} "
                f"(in {settings_path()})."
            )
    return choices


@dataclass
class SettingsStore:
    """The whole settings file: every machine's choices."""

    path: Path
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    legacy: dict[str, Any] | None = None  # a version 1 file, not yet given to a machine
    notes: list[str] = field(default_factory=list)  # what happened while loading, for the UI

    @classmethod
    def load(cls, path: Path | None = None) -> SettingsStore:
        path = path or settings_path()
        store = cls(path)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            return store
        except NotADirectoryError:
            # XDG_CONFIG_HOME (or a folder under it) is a file: nothing to read, nothing to set
            # aside; saving says so when it comes to that.
            store.notes.append(
                f"Saved choices cannot be read from {path.parent}: a file stands where that "
                "directory should be; defaults are used."
            )
            return store
        except (OSError, ValueError) as error:
            kept = _set_aside(path)
            store.notes.append(
                f"Saved choices in {path} could not be read ({error}); they were kept as {kept} "
                "and defaults are used."
            )
            return store
        machines = data.get("machines")
        if isinstance(machines, dict):
            store.machines = {str(k): v for k, v in machines.items() if isinstance(v, dict)}
        elif "machines" not in data and any(name in data for name in FIELDS):
            store.legacy = {k: v for k, v in data.items() if k in FIELDS}
        return store

    def choices_for(self, key: str, label: str, *, simulated: bool) -> Choices:
        """The choices saved for this machine (validated: bad fields dropped with a note). A
        version 1 file's choices go to the first real machine that asks."""
        data = self.machines.get(key)
        if data is None and self.legacy is not None and not simulated:
            data = self.legacy
            self.legacy = None
            self.notes.append(
                f"Your earlier saved choices now belong to this machine ({label}); other "
                "machines and simulated profiles keep their own."
            )
        if data is None:
            return Choices()
        return choices_from_json(data, label, self.notes)

    def put(self, key: str, label: str, choices: Choices) -> None:
        self.machines[key] = {"label": label, **choices.to_json()}

    def save(self) -> None:
        """Write the file. Raises SettingsNotSaved naming the directory and the fix."""
        document: dict[str, Any] = {"version": SETTINGS_VERSION, "machines": self.machines}
        if self.legacy is not None:
            document["legacy"] = self.legacy
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(document, indent=1))
            temporary.replace(self.path)
        except OSError as error:
            raise SettingsNotSaved(
                f"Your choices could not be saved in {self.path.parent}: "
                f"{error.strerror or error}.",
                "Make that directory writable, or point XDG_CONFIG_HOME at a writable one "
                "(your choices apply to this run only).",
            ) from None


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
