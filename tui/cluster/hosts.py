"""What a HOST on the `cluster` command line names: this machine (`local`), a bundled hardware
profile standing in for a server (`sim:PROFILE`), or an SSH destination (`user@host`, an alias
from ~/.ssh/config, `ssh://user@host:port`), which `ssh` itself resolves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llama_wizard.detect.errors import ActionableError

HostKind = Literal["local", "sim", "ssh"]

# What ssh accepts as a destination: [user@]host or ssh://[user@]host[:port]. No spaces, no
# leading dash (it would be read as an option), no shell metacharacters.
_DESTINATION = re.compile(
    r"^(ssh://)?([A-Za-z0-9._%+-]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(:\d+)?$"
)


class HostError(ActionableError):
    """A HOST argument that names nothing the cluster can use."""


@dataclass(frozen=True)
class HostSpec:
    text: str  # as given
    kind: HostKind
    destination: str | None = None  # ssh: what `ssh` is given
    profile: str | None = None  # sim: the bundled profile

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    @property
    def label(self) -> str:
        """How messages name the host: `local`, `sim:2x-mi50 (simulated)`, `user@gpu1`."""
        if self.kind == "sim":
            return f"{self.text} (simulated)"
        return self.text


def parse_host(text: str) -> HostSpec:
    """HOST as the cluster commands take it. Raises HostError saying which forms exist."""
    value = text.strip()
    if value == "local":
        return HostSpec(value, "local")
    if value.startswith("sim:"):
        from llama_wizard.detect.simulate import list_profiles

        profile = value.removeprefix("sim:")
        names = list_profiles()
        if profile not in names:
            raise HostError(
                f"There is no bundled hardware profile called {profile!r} (in {text!r}).",
                f"Use sim:NAME with one of: {', '.join(names)} (`llama-wizard --simulate list` "
                "describes them).",
            )
        return HostSpec(value, "sim", profile=profile)
    if value.startswith("-") or not _DESTINATION.match(value):
        raise HostError(
            f"{text!r} is not a host the cluster can use.",
            "Give `local`, `sim:PROFILE` (a bundled profile, simulated), or an SSH destination "
            "such as `user@gpu1`, `gpu1` (an alias from ~/.ssh/config) or "
            "`ssh://user@gpu1:2222`.",
        )
    return HostSpec(value, "ssh", destination=value)


def parse_hosts(texts: list[str]) -> list[HostSpec]:
    """Every HOST, each once (`local` and any destination named twice are one host)."""
    if not texts:
        raise HostError(
            "No host was given.",
            "Name the servers, for example `llama-wizard cluster plan local user@gpu2`.",
        )
    specs = [parse_host(t) for t in texts]
    seen: set[str] = set()
    for spec in specs:
        if spec.kind != "sim" and spec.text in seen:
            raise HostError(
                f"{spec.text} is named twice.",
                "Name each server once; its rpc-server exposes all of its GPUs.",
            )
        seen.add(spec.text)
    return specs
