"""Any JSON value in any field of the saved settings: the full-screen wizard's first steps
(detection, the plan) show a note or a message and go on; no traceback, and quitting exits 0."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_wizard.tui.settings import FIELDS, settings_path
from tests.nix_fixtures import fixture_flake
from tests.wizard_helpers import make_app, next_step, settle

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 40), max_value=1 << 40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=2)
    ),
    max_leaves=4,
)


async def first_steps(directory: Path, flake: str, profile: str) -> int | None:
    app = make_app(directory, profile, flake=flake)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        assert app.step in ("hardware", "build")
        await pilot.press("ctrl+c")
    return app.return_code


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a saved Hub model is looked up, never fetched


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=4),
    profile=st.sampled_from(["rtx4090", "2x-mi50", "no-gpu"]),
)
def test_any_saved_value_leaves_the_wizard_working(
    fields: dict[str, object], profile: str, offline: None, tmp_path: Path
) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    machine = {"label": profile, **fields}
    path.write_text(json.dumps({"version": 2, "machines": {f"simulated:{profile}": machine}}))
    flake = fixture_flake(tmp_path / "flake")
    with tempfile.TemporaryDirectory(dir=tmp_path) as directory:
        assert asyncio.run(first_steps(Path(directory), flake, profile)) == 0
