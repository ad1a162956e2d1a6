from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llama_wizard.detect.simulate import SimulatedMachine, materialize
from tests.nix_fixtures import NIX_CONFIG_FOR_TESTS

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


@pytest.fixture(autouse=True)
def isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own XDG config, cache and state directories (the flake-output cache,
    saved choices, build logs), and Nix settings that work as root without a daemon when the
    caller (scripts/test) has not set any."""
    base = tmp_path_factory.mktemp("xdg")
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, str(base / name.lower()))
    if "NIX_CONFIG" not in os.environ:
        monkeypatch.setenv("NIX_CONFIG", NIX_CONFIG_FOR_TESTS)
    # The speed prediction's RAM bandwidth: a fixed figure, so no test (or CLI subprocess)
    # spends 0.2 s measuring it and every prediction is the same on every machine; the tests of
    # the measurement itself delete it.
    monkeypatch.setenv("LLAMA_WIZARD_RAM_GBS", "50")
    # The model caches the ranked list reads are the test's own (XDG_CACHE_HOME), never the
    # developer's downloads.
    for name in ("LLAMA_CACHE", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    # Never the real Hugging Face Hub, nor the developer's token: a wizard that reaches its
    # download (the Build run step, --yes) on a real machine asks a port where nothing listens
    # (refused at once); tests of downloads point HF_ENDPOINT at tests/hub_server.py.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
