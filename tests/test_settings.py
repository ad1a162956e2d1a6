import os
from pathlib import Path

from llama_wizard.tui.settings import Settings, reset_settings, settings_path


def test_round_trip_in_the_xdg_config_dir() -> None:
    settings = Settings(flake="/srv/llama.cpp", gpus=[0, 1], model="Qwen/Qwen3-0.6B-GGUF", ctx=8192)
    settings.save()
    assert settings_path().is_file()
    assert settings_path().is_relative_to(os.environ["XDG_CONFIG_HOME"])
    loaded = Settings.load()
    assert (loaded.flake, loaded.gpus, loaded.model, loaded.ctx) == (
        "/srv/llama.cpp", [0, 1], "Qwen/Qwen3-0.6B-GGUF", 8192,
    )  # fmt: skip


def test_unreadable_file_is_kept_not_eaten() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")
    loaded = Settings.load()
    assert loaded.model is None and loaded.notes
    kept = [p for p in path.parent.iterdir() if p.name.startswith("settings.json.unreadable-")]
    assert len(kept) == 1 and kept[0].read_text() == "{ not json"


def test_unknown_keys_are_ignored_and_reset_keeps_a_backup() -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"model": "x/y", "future_option": 3}')
    assert Settings.load().model == "x/y"
    backup = reset_settings()
    assert backup is not None and Path(backup).read_text().startswith('{"model"')
    assert Settings.load().model is None
    assert reset_settings() is None
