"""Nix's own error, out of what it printed: the `error:` block (the message, its `at FILE:L:C:`
location and the code or log lines Nix shows with it), without what only adds noise.

Nix prints much around an error: progress lines (`copying '…'`, `downloading '…'`, with carriage
returns and colour codes on a terminal), `warning:` lines (each retry of a download is one),
`… while evaluating` trace frames, and `(use '--show-trace' …)`. The last line of stderr is
therefore rarely the error (it is often that hint, or a line of source code). Recorded real
stderr of Nix 2.8 is in tests/fixtures/nix/stderr/; newer Nix puts the trace frames first and the
real message last as an indented `error:` line, which this parser handles too.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ERROR = re.compile(r"^error:\s?(?P<message>.*)$")
_LOCATION = re.compile(r"^\s*at (?P<where>.+?:\d+:\d+):?\s*$")
SHOW_TRACE_HINT = "(use '--show-trace' to show detailed location information)"
# Follow-on errors: the derivations that could not be built because another one failed.
_FOLLOW_ON = re.compile(
    r"^\d+ dependenc(y|ies) of derivation .* failed to build|^build of .* failed"
)
# What curl and Nix say when the network is not there (curl's messages are quoted by Nix).
_NETWORK = re.compile(
    r"unable to download|Could(n't| not) resolve (host|proxy)|Couldn't connect to server|"
    r"cannot connect|Connection refused|Network is unreachable|No route to host|"
    r"Timeout was reached|timed out|Failure when receiving data|SSL connect error|"
    r"download of '[^']*' was interrupted|unable to (fetch|access) '(https?|git)",
    re.IGNORECASE,
)
_DOWNLOAD = re.compile(r"(?:unable to download|download of) '(?P<url>[^']+)'(?:: (?P<why>.+))?")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _shown(line: str) -> str:
    """What a terminal shows of a line that moved the cursor back with carriage returns."""
    parts = [part for part in line.split("\r") if part.strip()]
    return parts[-1] if parts else ""


@dataclass(frozen=True)
class NixErrorText:
    """One `error:` of Nix: `message` is its first line (without "error: "), `details` the
    lines Nix printed with it (location, source excerpt, a build's last log lines), dedented."""

    message: str
    details: tuple[str, ...] = ()

    @property
    def location(self) -> str | None:
        """`FILE:LINE:COLUMN` of the error, when Nix named one."""
        for line in self.details:
            if match := _LOCATION.match(line):
                return match.group("where")
        return None

    @property
    def text(self) -> str:
        """The block as Nix printed it, less the noise: for showing whole."""
        return "\n".join([f"error: {self.message}", *self.details]).rstrip()

    def summary(self) -> str:
        """One line: the message and where."""
        where = self.location
        return f"{self.message} (at {where})" if where else self.message

    @property
    def network(self) -> bool:
        """Whether this is a download that failed: no network, no DNS, a timeout."""
        return bool(_NETWORK.search(self.message))

    @property
    def url(self) -> str | None:
        match = _DOWNLOAD.search(self.message)
        return match.group("url") if match else None

    @property
    def network_reason(self) -> str | None:
        """curl's reason, without its number: "Couldn't resolve host name"."""
        match = _DOWNLOAD.search(self.message)
        if match is None or not match.group("why"):
            return None
        return re.sub(r"\s*\(\d+\)\s*$", "", match.group("why")).strip() or None


def _blocks(lines: list[str]) -> list[list[str]]:
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if _ERROR.match(line):
            current = [line]
            blocks.append(current)
        elif current is not None and (not line.strip() or line[:1].isspace()):
            current.append(line)
        elif current is not None and line.strip() == SHOW_TRACE_HINT:
            continue
        else:
            current = None  # a warning, a progress line: the block has ended
    return blocks


def _parse_block(block: list[str]) -> NixErrorText:
    match = _ERROR.match(block[0])
    assert match is not None
    message = match.group("message").strip().removesuffix(";")
    kept: list[str] = []
    in_trace = False
    for line in block[1:]:
        stripped = line.strip()
        if stripped == SHOW_TRACE_HINT:
            continue
        if stripped.startswith("…"):
            in_trace = True  # a trace frame: its "at" and excerpt lines go with it
            continue
        if nested := _ERROR.match(stripped):
            # Newer Nix: the frames come first, then the real message, indented.
            message, kept, in_trace = nested.group("message").strip().removesuffix(";"), [], False
            continue
        if not in_trace:
            kept.append(line)
    # Nix's blank lines only space the block out: without them it fits a small terminal.
    kept = [line for line in kept if line.strip()]
    details = textwrap.dedent("\n".join(kept)).split("\n") if kept else []
    return NixErrorText(message, tuple(line.rstrip() for line in details))


def nix_errors(stderr: str) -> list[NixErrorText]:
    """Every `error:` block Nix printed, in order."""
    lines = [_shown(line) for line in strip_ansi(stderr).split("\n")]
    return [_parse_block(block) for block in _blocks(lines)]


def nix_error(stderr: str) -> NixErrorText | None:
    """Nix's error in what it printed: the first that is not only a consequence of another
    (`1 dependencies of derivation … failed to build`), else the last; None when there is
    none."""
    errors = nix_errors(stderr)
    for error in errors:
        if not _FOLLOW_ON.search(error.message):
            return error
    return errors[-1] if errors else None


def is_network_failure(stderr: str) -> bool:
    error = nix_error(stderr)
    return error is not None and error.network
