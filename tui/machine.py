"""Which machine a command looks at: this one, a fixture root, or a bundled simulated profile."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_wizard.detect.sysroot import SystemRoot

if TYPE_CHECKING:
    from llama_wizard.detect.model import Inventory


@dataclass(frozen=True)
class Machine:
    root: SystemRoot
    env: dict[str, str]
    simulated: str | None = None

    def detect(self, timeout: float = 10.0) -> Inventory:
        """This machine's inventory, marked as simulated when it is."""
        from llama_wizard.detect.inventory import detect

        inventory = detect(self.root, timeout=timeout, env=self.env)
        inventory.simulated = self.simulated
        return inventory


@contextlib.contextmanager
def open_machine(root: str | None = None, simulate: str | None = None) -> Iterator[Machine]:
    """The machine to detect. A simulated one lives in a temporary directory for the duration."""
    if simulate:
        import tempfile

        from llama_wizard.detect.simulate import load_profile, materialize

        profile = load_profile(simulate)
        with tempfile.TemporaryDirectory(prefix="llama-wizard-sim-") as directory:
            machine = materialize(profile, directory)
            yield Machine(SystemRoot(machine.root), machine.env(), simulated=simulate)
        return
    yield Machine(SystemRoot.from_env(root), dict(os.environ))
