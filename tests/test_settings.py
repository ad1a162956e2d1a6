"""Saved choices: per machine, validated on load, migrated from version 1, never eaten."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_wizard.tui.settings import (
    FIELDS,
    Choices,
    SettingsNotSaved,
    SettingsStore,
    reset_settings,
    settings_path,
)


def write(document: object) -> Path:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def test_round_trip_per_machine_in_the_xdg_config_dir() -> None:
    store = SettingsStore.load()
    store.put("gpus:aaaa", "2x MI50", Choices(flake="/srv/llama.cpp", gpus=[0, 1], ctx=8192))
    store.put("simulated:rtx4090", "simulated rtx4090", Choices(quant="Q4_K_M"))
    store.save()
    assert settings_path().is_relative_to(os.environ["XDG_CONFIG_HOME"])
    loaded = SettingsStore.load()
    mi50 = loaded.choices_for("gpus:aaaa", "2x MI50", simulated=False)
    assert (mi50.flake, mi50.gpus, mi50.ctx, mi50.quant) == ("/srv/llama.cpp", [0, 1], 8192, None)
    other = loaded.choices_for("gpus:bbbb", "RTX 4090", simulated=False)
    assert other == Choices()
    assert loaded.choices_for("simulated:rtx4090", "x", simulated=True).quant == "Q4_K_M"
    assert loaded.notes == []


def test_unreadable_file_is_kept_not_eaten() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")
    loaded = SettingsStore.load()
    assert loaded.choices_for("cpu-only", "no GPU", simulated=False) == Choices()
    assert loaded.notes and "could not be read" in loaded.notes[0]
    kept = [p for p in path.parent.iterdir() if p.name.startswith("settings.json.unreadable-")]
    assert len(kept) == 1 and kept[0].read_text() == "{ not json"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ctx", "big"),
        ("ctx", -5),
        ("ctx", True),
        ("ctx", 12.5),
        ("flake", 5),
        ("model", 12),
        ("prompt", 7),
        ("host", 3),
        ("gpus", "abc"),
        ("gpus", [0, -1]),
        ("port", 70000),
        ("program", "rm"),
        ("quant", ["Q4"]),
    ],
)
def test_a_bad_field_is_dropped_with_a_note_naming_it(field: str, value: object) -> None:
    saved: dict[str, object] = {"quant": "Q8_0", "port": 9000}
    saved[field] = value
    write({"version": 2, "machines": {"cpu-only": saved}})
    store = SettingsStore.load()
    choices = store.choices_for("cpu-only", "no GPU", simulated=False)
    assert getattr(choices, field) == getattr(Choices(), field)
    assert any(f"saved {field} " in note for note in store.notes), store.notes
    if field != "quant":
        assert choices.quant == "Q8_0"
    if field != "port":
        assert choices.port == 9000  # the rest is kept


def test_version_1_choices_go_to_the_first_real_machine_not_a_simulated_one() -> None:
    write({"version": 1, "model": "x/y", "quant": "Q4_K_M", "ctx": 8192, "gpus": [1]})
    store = SettingsStore.load()
    assert store.choices_for("simulated:2x-mi50", "sim", simulated=True) == Choices()
    real = store.choices_for("gpus:1234", "RTX 4090", simulated=False)
    assert (real.model, real.quant, real.ctx, real.gpus) == ("x/y", "Q4_K_M", 8192, [1])
    assert any("now belong to this machine" in note for note in store.notes)
    store.put("gpus:1234", "RTX 4090", real)
    store.save()
    document = json.loads(settings_path().read_text())
    assert document["version"] == 2 and "legacy" not in document
    assert document["machines"]["gpus:1234"]["model"] == "x/y"


def test_version_1_choices_survive_a_save_made_before_a_real_machine_took_them() -> None:
    write({"version": 1, "model": "x/y"})
    store = SettingsStore.load()
    store.put("simulated:a", "sim", Choices(quant="Q8_0"))
    store.save()
    assert json.loads(settings_path().read_text())["legacy"]["model"] == "x/y"


def test_unknown_keys_are_ignored_and_reset_keeps_a_backup() -> None:
    write({"version": 2, "machines": {"cpu-only": {"model": "x/y", "future_option": 3}}})
    assert SettingsStore.load().choices_for("cpu-only", "", simulated=False).model == "x/y"
    backup = reset_settings()
    assert backup is not None and '"model"' in Path(backup).read_text()
    assert SettingsStore.load().machines == {}
    assert reset_settings() is None


def test_an_unwritable_config_dir_says_which_and_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    store = SettingsStore(blocker / "llama-wizard" / "settings.json")
    with pytest.raises(SettingsNotSaved) as raised:
        store.save()
    assert str(blocker / "llama-wizard") in raised.value.message
    assert "XDG_CONFIG_HOME" in raised.value.fix


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(FIELDS), JSON))
def test_any_json_in_any_field_loads_to_valid_choices(fields: dict[str, object]) -> None:
    write({"version": 2, "machines": {"cpu-only": fields}})
    store = SettingsStore.load()
    choices = store.choices_for("cpu-only", "no GPU", simulated=False)
    # Whatever was there, what comes out has the right types and passes its checks.
    assert choices.ctx is None or (isinstance(choices.ctx, int) and choices.ctx >= 256)
    assert choices.gpus is None or all(isinstance(i, int) and i >= 0 for i in choices.gpus)
    for name in ("flake", "output", "model", "quant"):
        assert getattr(choices, name) is None or isinstance(getattr(choices, name), str)
    assert isinstance(choices.prompt, str) and choices.prompt.strip()
    assert isinstance(choices.port, int) and 1 <= choices.port <= 65535
    assert choices.program in ("llama-completion", "llama-server")
