"""The probe: this machine's inventory as `llama-wizard detect --json` prints it, from the
detect/ package alone.

The cluster commands send detect/ to a server that has no llama-wizard installed
(tui/cluster/probe_bundle.py) and run `main()` there with the server's own python3, which has
neither psutil nor pyudev nor anything else of ours: so this module imports only detect/ and the
standard library. It is an entry point, the one place in detect/ that prints.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence

from llama_wizard.detect.errors import ProfileError
from llama_wizard.detect.model import Inventory
from llama_wizard.detect.tools import DEFAULT_TIMEOUT

SIMULATE_ENV = "LLAMA_WIZARD_SIMULATE"
EXIT_USAGE = 2


def probe(timeout: float = DEFAULT_TIMEOUT, simulate: str | None = None) -> Inventory:
    """This machine's inventory, or the bundled profile `simulate`'s (marked simulated), as
    `--simulate` detects it (tui/machine.py open_machine)."""
    from llama_wizard.detect.inventory import detect
    from llama_wizard.detect.sysroot import SystemRoot

    if not simulate:
        return detect(SystemRoot.from_env(None), timeout=timeout, env=dict(os.environ))
    from llama_wizard.detect.simulate import load_profile, materialize

    profile = load_profile(simulate)
    with tempfile.TemporaryDirectory(prefix="llama-wizard-sim-") as directory:
        machine = materialize(profile, directory)
        inventory = detect(SystemRoot(machine.root), timeout=timeout, env=machine.env())
    inventory.simulated = simulate
    return inventory


def main(argv: Sequence[str] | None = None) -> int:
    """`[TIMEOUT]`: seconds each GPU tool may take. Prints the inventory as one JSON document;
    a bad LLAMA_WIZARD_SIMULATE goes to stderr with exit status 2."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        timeout = float(arguments[0]) if arguments else DEFAULT_TIMEOUT
    except ValueError:
        print(f"llama-wizard probe: {arguments[0]!r} is not a number of seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        inventory = probe(timeout, os.environ.get(SIMULATE_ENV) or None)
    except ProfileError as error:
        print(f"llama-wizard probe: {error}", file=sys.stderr)
        return EXIT_USAGE
    json.dump(inventory.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
