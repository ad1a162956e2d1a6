"""The fixture flakes (tests/fixtures/flakes), copied where Nix can read them as path flakes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FLAKES = Path(__file__).resolve().parent / "fixtures" / "flakes"

NIX_CONFIG_FOR_TESTS = """experimental-features = nix-command flakes
sandbox = false
build-users-group =
substituters =
connect-timeout = 5
"""


def fixture_flake(destination: Path, name: str = "documented") -> str:
    """Copy fixture flake `name` (with the shared stand-in) to `destination`; its flake ref."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(FLAKES / name / "flake.nix", destination / "flake.nix")
    shutil.copy(FLAKES / "stand-in.nix", destination / "stand-in.nix")
    return str(destination)


def nix_config_without_flakes() -> str:
    lines = [line for line in os.environ.get("NIX_CONFIG", NIX_CONFIG_FOR_TESTS).splitlines()
             if not line.strip().startswith("experimental-features")]  # fmt: skip
    return "\n".join([*lines, "experimental-features = "]) + "\n"


def fresh_variant(flake: str, variant: str) -> str:
    """Rename a fixture output's derivation so Nix really builds it (it reuses finished ones)."""
    import uuid

    path = Path(flake) / "flake.nix"
    renamed = f'variant = "{variant}-{uuid.uuid4().hex[:8]}"'
    path.write_text(path.read_text().replace(f'variant = "{variant}"', renamed))
    return flake


def fresh_builds(flake: str) -> str:
    """Make every derivation of the fixture flake new, so Nix really builds (and logs) them."""
    import uuid

    path = Path(flake) / "stand-in.nix"
    marker = f"-- llama.cpp stand-in {uuid.uuid4().hex[:8]}"
    path.write_text(path.read_text().replace("-- llama.cpp stand-in", marker))
    return flake
