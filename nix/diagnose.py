"""Why a build failed, in a form a person can act on: Nix's own error, the failing derivation,
the last lines of its log, where the full log is, the `nix log` command, and the fix for causes
we recognise (Nix's setup, the network, the disk, memory, licences)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from llama_wizard.nix.build import BuildRecord
from llama_wizard.nix.environment import build_users_problem
from llama_wizard.nix.errors import offline_fix
from llama_wizard.nix.events import BuildProgress
from llama_wizard.nix.messages import NixErrorText, nix_error

_DRV_IN_ERROR = re.compile(r"(/nix/store/[0-9a-z]{32}-[^'\s]+\.drv)")
_MISSING_GROUP = re.compile(r"the group '([^']+)' specified in 'build-users-group' does not exist")


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
        "build needs tens of GiB.",
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
        "The compiler was killed for lack of memory: GPU code compiles need several GiB per job.",
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
    nix_error: NixErrorText | None = None  # Nix's own `error:`, as it said it

    def nix_said(self) -> list[str]:
        """Nix's error for showing: the whole block (its location and source lines) when no
        build log says more, else its message (the log's last lines are shown beside it)."""
        if self.nix_error is None:
            return []
        if self.last_lines:
            return [f"error: {self.nix_error.summary()}"]
        return self.nix_error.text.splitlines()

    def report_lines(self) -> list[str]:
        """The report as lines, for every face: Nix's error, the derivation, the cause and its
        fix, where the log is (the log's last lines are shown apart)."""
        lines = [*self.nix_said()]
        if self.derivation:
            lines.append(f"failing derivation: {self.derivation}")
        if self.cause is not None:
            lines += [f"cause: {self.cause.message}", f"fix: {self.cause.fix}"]
        lines.append(f"full log: {self.log_path}")
        if self.nix_log_command:
            lines.append(f"or: {self.nix_log_command}")
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "nix_error": None
            if self.nix_error is None
            else {
                "message": self.nix_error.message,
                "location": self.nix_error.location,
                "text": self.nix_error.text,
            },
            "derivation": self.derivation,
            "last_lines": self.last_lines,
            "log": self.log_path,
            "nix_log_command": self.nix_log_command,
            "errors": self.errors,
            "cause": None
            if self.cause is None
            else {"code": self.cause.code, "message": self.cause.message, "fix": self.cause.fix},
        }


def _flake_ref(argv: list[str]) -> str | None:
    """The flake a `nix build` argv builds from: the argument with `#OUTPUT`."""
    after = argv[argv.index("build") + 1 :] if "build" in argv else argv
    return next((a.split("#", 1)[0] for a in after if "#" in a and not a.startswith("-")), None)


def _setup_or_network_cause(error: NixErrorText | None, argv: list[str]) -> KnownCause | None:
    """Causes known from Nix's own error (never from a build's log, where a compiler or a test
    may print the same words)."""
    if error is None:
        return None
    if match := _MISSING_GROUP.search(error.message):
        problem = build_users_problem(match.group(1))
        return KnownCause(problem.code, _MISSING_GROUP, problem.message, problem.fix)
    if error.network:
        ref = _flake_ref(argv) or ""
        reason = error.network_reason or "the download failed"
        what = f"{error.url}" if error.url else "what the build needs"
        if ref and not ref.startswith(("/", ".", "path:", "git+file:")):
            fix = offline_fix(ref)
        else:
            fix = (
                "The build downloads its inputs (nixpkgs, compilers, the binary cache): "
                "connect this machine to the network and build again, or build on a machine "
                "that has it and copy the result here with `nix copy`."
            )
        return KnownCause(
            "offline",
            re.compile(re.escape(error.message)),
            f"Nix could not download {what} ({reason}): is this machine offline?",
            fix,
        )
    return None


def diagnose(progress: BuildProgress, record: BuildRecord, lines: int = 25) -> FailureReport:
    failed = progress.failed_build()
    derivation = failed.drv_path if failed else None
    if derivation is None:
        for error in progress.errors:
            if match := _DRV_IN_ERROR.search(error):
                derivation = match.group(1)
                break
    last = list(failed.lines)[-lines:] if failed else [t.text for t in progress.tail][-lines:]
    said = nix_error("\n".join(progress.errors))
    if said is None and record.note:
        said = nix_error(record.note)
    if said is not None and failed is None:
        last = []  # not a builder's failure: the tail is Nix's own messages, shown as `said`
    haystack = "\n".join([*progress.errors, *last, *(t.text for t in progress.tail)])
    cause = _setup_or_network_cause(said, record.argv) or next(
        (c for c in KNOWN_CAUSES if c.pattern.search(haystack)), None
    )
    nix = [a for a in record.argv[: record.argv.index("build")] if a != "build"]
    return FailureReport(
        derivation=derivation,
        last_lines=last,
        log_path=record.text_log,
        nix_log_command=shlex.join([*nix, "log", derivation]) if derivation else None,
        errors=progress.errors[-5:],
        cause=cause,
        nix_error=said,
    )
