"""Why a build failed, in a form a person can act on: the failing derivation, the last lines of
its log, where the full log is, the `nix log` command, and the fix for causes we recognise."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from llama_wizard.nix.build import BuildRecord
from llama_wizard.nix.events import BuildProgress

_DRV_IN_ERROR = re.compile(r"(/nix/store/[0-9a-z]{32}-[^'\s]+\.drv)")


@dataclass(frozen=True)
class KnownCause:
    code: str
    pattern: re.Pattern[str]
    message: str
    fix: str


KNOWN_CAUSES: tuple[KnownCause, ...] = (
    KnownCause(
        "flakes_disabled",
        re.compile(r"experimental Nix feature '(flakes|nix-command)' is disabled"),
        "Flakes are not enabled in this Nix.",
        "Run the build through llama-wizard (it adds `--extra-experimental-features 'nix-command "
        "flakes'`), or add `experimental-features = nix-command flakes` to "
        "~/.config/nix/nix.conf.",
    ),
    KnownCause(
        "no_space",
        re.compile(r"No space left on device|ENOSPC", re.IGNORECASE),
        "The disk filled up during the build.",
        "Free space in /nix/store (`nix-collect-garbage -d`) or /tmp, then build again; a ROCm "
        "build needs tens of GB.",
    ),
    KnownCause(
        "unfree",
        re.compile(r"has an unfree license|allowUnfree|refusing to evaluate", re.IGNORECASE),
        "The build needs an unfree package (CUDA's license) that Nix refuses by default.",
        "Allow it for this build: `export NIXPKGS_ALLOW_UNFREE=1` and add `--impure`, or set "
        "`nixpkgs.config.allowUnfree = true` (`~/.config/nixpkgs/config.nix`: "
        "`{ allowUnfree = true; }`).",
    ),
    KnownCause(
        "out_of_memory",
        re.compile(
            r"Killed signal terminated program|unable to execute command: Killed|"
            r"out of memory|Cannot allocate memory|signal 9|virtual memory exhausted",
            re.IGNORECASE,
        ),
        "The compiler was killed for lack of memory: GPU code compiles need several GB per job.",
        "Build fewer targets (a per-gfx output or the restricted `rocm` build the plan "
        "suggests), and fewer jobs at once: add `--cores 4 --max-jobs 1` to the build.",
    ),
)


@dataclass
class FailureReport:
    derivation: str | None
    last_lines: list[str]
    log_path: str
    nix_log_command: str | None
    errors: list[str]
    cause: KnownCause | None = None
    extra: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "derivation": self.derivation,
            "last_lines": self.last_lines,
            "log": self.log_path,
            "nix_log_command": self.nix_log_command,
            "errors": self.errors,
            "cause": None
            if self.cause is None
            else {"code": self.cause.code, "message": self.cause.message, "fix": self.cause.fix},
        }


def diagnose(progress: BuildProgress, record: BuildRecord, lines: int = 25) -> FailureReport:
    failed = progress.failed_build()
    derivation = failed.drv_path if failed else None
    if derivation is None:
        for error in progress.errors:
            if match := _DRV_IN_ERROR.search(error):
                derivation = match.group(1)
                break
    last = list(failed.lines)[-lines:] if failed else [t.text for t in progress.tail][-lines:]
    haystack = "\n".join([*progress.errors, *last, *(t.text for t in progress.tail)])
    cause = next((c for c in KNOWN_CAUSES if c.pattern.search(haystack)), None)
    nix = [a for a in record.argv[: record.argv.index("build")] if a != "build"]
    return FailureReport(
        derivation=derivation,
        last_lines=last,
        log_path=record.text_log,
        nix_log_command=shlex.join([*nix, "log", derivation]) if derivation else None,
        errors=progress.errors[-5:],
        cause=cause,
    )
