"""Any JSON value in any field of the saved settings, then `llama-wizard --yes --simulate
PROFILE` as a script would run it (the real command, in a subprocess): no traceback, and exit 0,
or 1 with a message saying what to do."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_wizard.tui.settings import FIELDS, settings_path
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake
from tests.test_wizard_properties import JSON


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixture_flake(tmp_path_factory.mktemp("flake"))


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=5),
    profile=st.sampled_from(["rtx4090", "2x-mi50"]),
    with_flake=st.booleans(),
)
def test_any_saved_value_and_yes_end_with_0_or_1_and_a_message(
    fields: dict[str, object], profile: str, with_flake: bool, flake: str
) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Both the machine's own entry and a version 1 file's fields.
    path.write_text(json.dumps({**fields, "machines": {f"simulated:{profile}": fields}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["--yes", "--simulate", profile, *(["--flake", flake] if with_flake else [])]
    result = run_cli(*args, env=env, timeout=240)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode in (0, 1), result.stderr[-2000:]
    if result.returncode == 1:
        assert result.stderr.strip(), "a failure says why"
