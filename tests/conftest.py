from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detect.simulate import SimulatedMachine, materialize

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def simulated(tmp_path: Path) -> Callable[[str | dict[str, Any]], SimulatedMachine]:
    """Materialize a bundled profile (by name) or a profile dict into a fresh directory."""
    counter = iter(range(1000))

    def make(profile: str | dict[str, Any]) -> SimulatedMachine:
        name = profile if isinstance(profile, str) else profile.get("name", "custom")
        return materialize(profile, tmp_path / f"{name}-{next(counter)}")

    return make
