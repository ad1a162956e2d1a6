"""Issue 9's observations, in the full-screen wizard (the pilot): saved choices stay with their
machine, wrong-typed settings and unusable directories never crash, the context field changes
only on Enter, a choice that does not fit is confirmed, and what is saved and written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, Select, Static

from llama_wizard.screens.build import BuildView
from llama_wizard.tui.settings import SettingsStore, settings_path
from llama_wizard.tui.widgets import CommandText
from tests.wizard_helpers import (
    make_app,
    next_step,
    record_notifications,
    saved_choices,
    settle,
    wait_for,
)

REAL = "gpus:0123456789abcdef"  # a real machine's saved choices, which no simulation touches


def write_settings(machines: dict[str, object] | None = None, **legacy: object) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"version": 2, "machines": machines} if machines is not None else legacy
    path.write_text(json.dumps(document))


def quant_table(app) -> tuple[DataTable, list[str]]:
    table = app.screen.query_one("#quants", DataTable)
    report = app.screen.report
    assert report is not None
    return table, [c.quant for c in report.source.candidates]


def cursor_quant(app) -> str:
    table, quants = quant_table(app)
    return quants[table.cursor_row]


async def to_model_step(pilot) -> None:
    await settle(pilot)
    await next_step(pilot)
    assert pilot.app.step == "build" and pilot.app.session.plan is not None
    await next_step(pilot)
    assert pilot.app.step == "model"


# (1) choices made on one (simulated) machine are not another's ----------------------------------


async def test_choices_made_under_one_profile_do_not_preselect_on_another(
    tmp_path: Path,
) -> None:
    real = {"label": "the real box", "model": "Qwen/Qwen3-8B-GGUF", "quant": "Q4_K_M"}
    write_settings({REAL: real})
    app = make_app(tmp_path / "a", "2x-mi50")
    async with app.run_test(size=(120, 40)) as pilot:
        await to_model_step(pilot)
        recommended = app.session.plan.recommended_model
        assert cursor_quant(app) == recommended.quant == "Q5_K_M"
        await pilot.press("up")  # Q4_K_M: it fits, so highlighting it takes it
        await pilot.pause()
        assert app.session.plan.model.quant == "Q4_K_M"
        await pilot.press("ctrl+c")
    assert app.return_code == 0
    assert saved_choices("simulated:2x-mi50").quant == "Q4_K_M"

    app = make_app(tmp_path / "b", "rtx4090")
    async with app.run_test(size=(120, 40)) as pilot:
        await to_model_step(pilot)
        plan = app.session.plan
        assert plan.model.quant == plan.recommended_model.quant == "IQ4_XS"
        assert cursor_quant(app) == "IQ4_XS"
        chosen = str(app.screen.query_one("#choice", Static).content)
        assert "IQ4_XS" in chosen and "Q5_K_M" not in chosen
        await pilot.press("ctrl+c")
    store = SettingsStore.load()
    assert store.machines[REAL] == real  # the real machine's choices are untouched
    assert set(store.machines) == {REAL, "simulated:2x-mi50", "simulated:rtx4090"}
    assert saved_choices("simulated:rtx4090").quant is None  # the recommendation
    assert saved_choices("simulated:2x-mi50").quant == "Q4_K_M"


# (3) wrong-typed settings: a note, and the wizard works -----------------------------------------

BAD_FIELDS = [
    {"ctx": "big"},
    {"flake": 5},
    {"gpus": "abc"},
    {"model": 12},
    {"prompt": 7},
    {"host": 3},
    {"port": "eighty"},
    {"quant": ["Q4_K_M"]},
    {"ctx": -5, "n_predict": True},
]


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=",".join)
async def test_wrong_typed_settings_are_dropped_with_a_note(tmp_path: Path, bad: dict) -> None:
    write_settings({"simulated:2x-mi50": {"label": "simulated 2x-mi50", **bad}})
    app = make_app(tmp_path, "2x-mi50")
    shown = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await to_model_step(pilot)
        assert app.session.plan.model is not None
        for name in bad:
            assert any(f"saved {name}" in note and "dropped" in note for note in shown), shown
        await pilot.press("ctrl+c")
    assert app.return_code == 0


async def test_an_old_settings_file_with_wrong_types_on_the_real_machine(tmp_path: Path) -> None:
    write_settings(ctx="big", gpus="abc", flake=5, quant="Q4_K_M")  # a version 1 file
    app = make_app(tmp_path, "2x-mi50", simulated=False)
    shown = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await to_model_step(pilot)
        await pilot.press("ctrl+c")
    assert app.return_code == 0
    assert any("now belong to this machine" in note for note in shown), shown
    for name in ("ctx", "gpus", "flake"):
        assert any(f"saved {name}" in note for note in shown), (name, shown)


# (4) unusable directories: a message, never a traceback -----------------------------------------


async def test_an_unwritable_state_dir_is_said_at_the_build_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    monkeypatch.setenv("XDG_STATE_HOME", str(afile))
    app = make_app(tmp_path, "2x-mi50", model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(120, 40)) as pilot:
        await to_model_step(pilot)
        await next_step(pilot)
        assert app.step == "build-run"
        await wait_for(lambda: "XDG_STATE_HOME" in _build_status(app))
        status = _build_status(app)
        assert str(afile) in status and "Fix:" in status and "Traceback" not in status
        assert not app.screen.query(BuildView)
        await pilot.press("ctrl+n")  # not built: it stays
        await pilot.pause()
        assert app.step == "build-run"
        await pilot.press("ctrl+c")
    assert app.return_code == 0


def _build_status(app) -> str:
    return str(app.screen.query_one("#build-status", Static).content)


async def test_an_unwritable_config_dir_is_said_and_the_wizard_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(afile))
    app = make_app(tmp_path, "2x-mi50")
    shown = record_notifications(app)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        assert app.step == "build"  # saving failed on the way; the wizard went on
        assert any("could not be saved" in note and str(afile) in note for note in shown), shown
        await pilot.press("ctrl+c")
    assert app.return_code == 0


# (5) the context field changes the context only on Enter ----------------------------------------


async def test_stray_keys_in_the_context_field_change_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50", model="Qwen/Qwen3-0.6B-GGUF")
    shown = record_notifications(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await to_model_step(pilot)
        field = app.screen.query_one("#ctx", Input)
        assert field.value == "32768" and not field.has_focus  # the table has the keys
        field.focus()
        await pilot.press("end", "5", "2", "5", "0", "1", "2")
        assert field.value == "32768525012"
        await pilot.press("tab")  # left without Enter: not applied, and the field says so
        await settle(pilot)
        assert field.value == "32768"
        assert app.session.plan.model.ctx == 32768
        field.focus()
        await pilot.press("ctrl+a", "ctrl+k", "1", "0", "0", "enter")  # below 256
        await settle(pilot)
        assert app.session.plan.model.ctx == 32768
        assert any("between 256" in note for note in shown), shown
        await pilot.press("ctrl+a", "ctrl+k", "8", "1", "9", "2", "enter")
        await settle(pilot)
        assert app.session.plan.model.ctx == 8192
        assert app.screen.report.ctx == 8192
        app.screen.query_one("#quants", DataTable).focus()
        await pilot.press("minus")
        await settle(pilot)
        assert app.session.plan.model.ctx == 4096
        await pilot.press("plus", "plus")
        await settle(pilot)
        assert app.session.plan.model.ctx == 16384
        for _ in range(7):
            await pilot.press("minus")
            await settle(pilot)
        assert app.screen.ctx == 256  # halving stops at the smallest valid context
        await pilot.press("ctrl+c")
    assert saved_choices("simulated:2x-mi50").ctx == 256


# (6) a choice that does not fit is confirmed ----------------------------------------------------


BIG = "bartowski/Meta-Llama-3.1-70B-Instruct-GGUF"


async def test_a_quant_that_does_not_fit_is_confirmed_on_next(tmp_path: Path) -> None:
    # A model of which no quant fits the APU (the estimate offloads MoE experts to the CPU, so
    # a 30B MoE may fit; a 70B dense model does not).
    app = make_app(tmp_path, "780m-apu")
    async with app.run_test(size=(120, 40)) as pilot:
        await to_model_step(pilot)
        preselected = app.session.plan.model
        assert preselected.verdict != "no"
        assert app.screen.report.quants[app.screen.query_one("#quants").cursor_row].verdict != "no"
        models = app.screen.query_one("#models", OptionList)
        models.focus()
        models.highlighted = models.get_option_index(BIG)
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.report.source.repo == BIG
        assert all(e.verdict == "no" for e in app.screen.report.quants)  # nothing fits
        app.screen.query_one("#quants", DataTable).focus()
        await pilot.press("down")
        await pilot.pause()
        wanted = cursor_quant(app)
        assert "does NOT fit" in str(app.screen.query_one("#choice", Static).content)
        assert app.session.plan.model == preselected  # not taken yet
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmScreen"
        await pilot.press("n")
        await pilot.pause()
        assert app.step == "model" and app.session.plan.model == preselected
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmScreen"
        await pilot.press("y")
        await settle(pilot)
        assert app.step == "build-run"
        model = app.session.plan.model
        assert model.quant == wanted and model.verdict == "no"
        await wait_for(lambda: bool(app.screen.query(BuildView))
                       and app.screen.query_one(BuildView).final is not None)  # fmt: skip
        await pilot.press("escape")  # back: the confirmed choice is still the one shown
        await settle(pilot)
        assert app.step == "model" and cursor_quant(app) == wanted
        assert app.session.plan.model.quant == wanted
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmScreen"  # asked again, never silent
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("ctrl+c")
    assert app.return_code == 0
    saved = saved_choices("simulated:780m-apu")
    assert (saved.model, saved.quant) == (BIG, wanted)


# (7) what is saved and written -------------------------------------------------------------------


async def test_choices_equal_to_the_recommendation_are_saved_as_null(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        select = app.screen.query_one("#output-choice", Select)
        select.focus()
        select.value = "rocm-gfx906"  # the recommended output, by its name
        await settle(pilot)
        assert app.session.plan.build.output == "rocm-gfx906"
        await next_step(pilot)
        assert app.step == "model"
        await pilot.press("up")  # another quant ...
        await pilot.pause()
        assert app.session.choices.quant == "Q4_K_M"
        await pilot.press("down")  # ... and back to the recommended one
        await pilot.pause()
        await pilot.press("ctrl+c")
    saved = SettingsStore.load().machines["simulated:2x-mi50"]
    for name in ("gpus", "output", "model", "quant", "ctx"):
        assert saved[name] is None, (name, saved)


async def test_a_saved_output_the_flake_lacks_is_dropped_with_a_note(tmp_path: Path) -> None:
    write_settings({"simulated:2x-mi50": {"label": "x", "output": "no-such-output"}})
    app = make_app(tmp_path, "2x-mi50")
    shown = record_notifications(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        plan = app.session.plan
        assert plan is not None and plan.build.output == "rocm-gfx906"
        assert any("no-such-output" in note for note in shown), shown
        select = app.screen.query_one("#output-choice", Select)
        values = [value for _, value in select._options]
        assert "rocm-gfx906" in values and "vulkan" in values
        assert select.value == "__recommended__"
        await pilot.press("ctrl+c")
    assert saved_choices("simulated:2x-mi50").output is None


async def test_done_writes_the_commands_here_and_asks_before_replacing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    app = make_app(tmp_path, "2x-mi50", model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        app.goto("done")
        await settle(pilot)
        assert app.screen.query_one("#save-path", Input).value == "./llama-wizard-commands.sh"
        await pilot.press("ctrl+s")
        await pilot.pause()
        written = here / "llama-wizard-commands.sh"
        assert written.is_file() and "nix build" in written.read_text()
        written.write_text("mine\n")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmScreen"
        await pilot.press("n")
        await pilot.pause()
        assert written.read_text() == "mine\n"
        assert "Kept" in str(app.screen.query_one("#done-status", Static).content)
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert "nix build" in written.read_text()
        assert "Saved" in str(app.screen.query_one("#done-status", Static).content)
        await pilot.press("ctrl+c")


async def test_reset_saved_choices_goes_back_to_the_recommendations(tmp_path: Path) -> None:
    write_settings({"simulated:2x-mi50": {"label": "x", "gpus": [0], "quant": "Q4_K_M"}})
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.session.chosen_gpus() == [0]
        await next_step(pilot)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        commands["Reset saved choices"].callback()
        await settle(pilot)
        assert app.step == "hardware"
        assert app.session.chosen_gpus() == [0, 1]
        assert sorted(app.screen.query_one("#gpus").selected) == [0, 1]
        await pilot.press("ctrl+c")
    assert settings_path().with_name("settings.json.bak").is_file()


# the launch fields and a GPU that is not there go through the session's checks ------------------


async def test_launch_fields_are_checked_and_a_bad_one_is_said(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50", model="Qwen/Qwen3-0.6B-GGUF")
    shown = record_notifications(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        app.goto("launch")
        await settle(pilot)
        status = app.screen.query_one("#launch-status", Static)
        app.screen.query_one("#port", Input).value = "99999"
        await pilot.pause()
        assert "not a TCP port" in str(status.content)
        assert app.session.choices.port == 8080  # unchanged
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not app.launch_running and app.launched is None
        assert any("not a TCP port" in note for note in shown), shown
        app.screen.query_one("#port", Input).value = "9090"
        app.screen.query_one("#prompt", Input).value = "Hello there"
        await pilot.pause()
        assert app.session.choices.port == 9090 and app.session.choices.prompt == "Hello there"
        assert "not a TCP port" not in str(status.content)
        assert "'Hello there'" in app.screen.query_one("#command", CommandText).text
        app.screen.query_one("#prompt", Input).value = "   "
        await pilot.pause()
        assert app.session.choices.prompt == "Hello there"
        assert "prompt must be some text" in str(status.content)
        await pilot.press("ctrl+c")
    assert app.return_code == 0
    assert saved_choices("simulated:2x-mi50").port == 9090


async def test_a_gpu_named_on_the_command_line_that_is_not_there(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50", gpus=[5])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        status = str(app.screen.query_one("#status", Static).content)
        assert "There is no GPU 5" in status and "Fix:" in status
        await pilot.press("ctrl+c")
    assert app.return_code == 0
