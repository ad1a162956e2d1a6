"""The whole wizard, driven with the pilot: simulated machines, the fixture flake built for real
with Nix, and the stand-in llama-completion launched for real."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Log, SelectionList, Static

from llama_wizard.nix.build import find_build, read_record, request_cancel, wait_finished
from llama_wizard.screens.build import BuildView
from llama_wizard.tui.plan import state_dir
from tests.nix_fixtures import fixture_flake, fresh_variant
from tests.wizard_helpers import make_app, next_step, saved_choices, settle, wait_for


async def run_whole_flow(tmp_path: Path, profile: str) -> tuple[list[str], list[str]]:
    app = make_app(tmp_path, profile, model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.step == "hardware" and app.session.inventory is not None
        await next_step(pilot)
        assert app.step == "build" and app.session.plan is not None
        await next_step(pilot)
        assert app.step == "model"
        model = app.session.plan.model
        assert model is not None and model.repo.startswith("Qwen/")
        await next_step(pilot)
        assert app.step == "build-run"
        await wait_for(lambda: bool(app.screen.query(BuildView))
                       and app.screen.query_one(BuildView).final is not None)  # fmt: skip
        assert app.screen.query_one(BuildView).final.status == "succeeded"
        await next_step(pilot)
        assert app.step == "launch"
        await pilot.press("ctrl+r")
        await wait_for(lambda: app.launched is not None and app.launched.finished
                       and not app.launch_running)  # fmt: skip
        await pilot.pause()
        output = list(app.screen.query_one("#launch-output", Log).lines)
        speed = str(app.screen.query_one("#speed", Static).content)
        assert "600.0 tokens/s" in speed and "200.0 tokens/s" in speed
        await next_step(pilot)
        assert app.step == "done"
        commands = app.screen.commands
        titles = [c.title for c in commands]
        await pilot.press("y")
        assert app.clipboard == commands[0].text
        save = tmp_path / "commands.sh"
        app.screen.query_one("#save-path").value = str(save)
        await pilot.press("ctrl+s")
        assert save.is_file() and commands[0].text in save.read_text()
        await pilot.press("q")
    saved = saved_choices(f"simulated:{profile}")
    assert saved.model == "Qwen/Qwen3-0.6B-GGUF" and saved.quant == "Q8_0"
    return output, titles


async def test_two_mi50s_from_hardware_to_launch(tmp_path: Path) -> None:
    output, titles = await run_whole_flow(tmp_path, "2x-mi50")
    assert "env: HSA_OVERRIDE_GFX_VERSION=9.0.6" in output
    assert "env: ROCR_VISIBLE_DEVICES=GPU-4f0a78a172e620fc,GPU-6e5e588172dc76b6" in output
    assert "env: HIP_VISIBLE_DEVICES=<unset>" in output
    assert "argv: -hf" in output and "argv: Qwen/Qwen3-0.6B-GGUF:Q8_0" in output
    assert "argv: -ngl" in output and "argv: The capital of France is" in output
    assert any("NixOS" in title for title in titles)


async def test_rtx4090_from_hardware_to_launch(tmp_path: Path) -> None:
    output, _ = await run_whole_flow(tmp_path, "rtx4090")
    assert "env: CUDA_DEVICE_ORDER=PCI_BUS_ID" in output
    assert any(line.startswith("env: CUDA_VISIBLE_DEVICES=GPU-") for line in output)
    assert "env: ROCR_VISIBLE_DEVICES=<unset>" in output


async def test_choosing_gpus_changes_the_plan(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        selection = app.screen.query_one("#gpus", SelectionList)
        assert sorted(selection.selected) == [0, 1]
        selection.deselect(1)
        await pilot.pause()
        await next_step(pilot)
        assert app.session.plan.build.gpus == [0]
        assert app.session.plan.build.env["ROCR_VISIBLE_DEVICES"] == "GPU-4f0a78a172e620fc"
        await pilot.press("escape")
        await settle(pilot)
        assert app.step == "hardware"
        assert sorted(app.screen.query_one("#gpus", SelectionList).selected) == [0]
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.press("q")
    assert saved_choices("simulated:2x-mi50").gpus == [0]


async def test_quitting_during_a_build_asks_and_leaves_it_running(tmp_path: Path) -> None:
    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    app = make_app(tmp_path, "no-gpu", flake=flake, output="slow")
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await next_step(pilot)
            assert app.session.plan.build.output == "slow"
            assert "chosen by hand" in app.session.plan.build.reasons[0]
            await next_step(pilot)
            assert app.step == "model" and app.session.plan.model is not None  # fits in RAM
            await next_step(pilot)
            assert app.step == "build-run"
            await wait_for(lambda: app.build_running)
            await pilot.press("q")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "ConfirmScreen"
            await pilot.press("n")
            await pilot.pause()
            assert app.is_running
            await pilot.press("q")
            await pilot.pause()
            await pilot.press("y")
        record = find_build(state_dir(), app.session.plan.build.build_name)
        assert record is not None and read_record(record).status == "running"
    finally:
        plan = app.session.plan
        record = find_build(state_dir(), plan.build.build_name) if plan is not None else None
        if record is not None:
            request_cancel(record)
            assert wait_finished(record, timeout=30).finished


async def test_choosing_another_output_replans_and_says_what_it_costs(tmp_path: Path) -> None:
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        assert app.session.plan.build.output == "rocm-gfx906"
        select = app.screen.query_one("#output-choice")
        select.focus()
        select.value = "rocm"
        await pilot.pause()
        await settle(pilot)
        build = app.session.plan.build
        assert build.output == "rocm" and build.recommended_output == "rocm-gfx906"
        assert any("architectures" in cost for cost in build.costs)
        await pilot.press("q")
    assert saved_choices("simulated:2x-mi50").output == "rocm"


async def test_hardware_fills_in_before_a_slow_tool_answers(tmp_path: Path) -> None:
    app = make_app(tmp_path, "rocminfo-hangs", timeout=3)
    async with app.run_test(size=(100, 30)) as pilot:

        def listed() -> int:
            found = app.screen.query("#gpus")
            return found.first(SelectionList).option_count if found else 0

        await wait_for(lambda: listed() == 2, timeout=2.5)
        status = str(app.screen.query_one("#status", Static).content)
        assert "rocminfo …" in status and app.session.inventory is None  # still waiting on it
        await settle(pilot)
        assert app.session.inventory is not None
        assert [w.code for w in app.session.inventory.warnings] == ["tool_timeout"]
        await pilot.press("q")


async def test_a_running_build_is_announced_and_can_be_followed(tmp_path: Path) -> None:
    from llama_wizard.nix.build import start_build

    flake = fresh_variant(fixture_flake(tmp_path / "flake"), "slow")
    record = start_build(["nix", "build", f"{flake}#slow"], "slow", state_dir())
    try:
        app = make_app(tmp_path, "no-gpu", flake=flake)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await wait_for(lambda: bool(app.running), timeout=10)  # looked for after 0.5 s
            assert [r.output for r in app.running] == ["slow"]
            commands = [c.title for c in app.get_system_commands(app.screen)]
            assert "Follow the running build" in commands
            app.follow_running_build(app.running[0])
            await pilot.pause()
            view = app.screen.query_one(BuildView)
            log = view.query_one("#build-log", Log)
            await wait_for(lambda: any("[1/600]" in line for line in log.lines))
            await pilot.press("c")  # asks first (an hour-long build is one key away)
            await pilot.pause()
            await pilot.press("y")
            await wait_for(lambda: view.final is not None)
            assert view.final.status == "cancelled"
    finally:
        request_cancel(read_record(record))
        wait_finished(record, timeout=30)


async def test_a_gguf_already_in_llama_cpp_s_cache_can_be_chosen(
    tmp_path: Path, monkeypatch
) -> None:
    from textual.widgets import OptionList

    from tests.fixtures.models.gguf_helpers import llama_tensors, write_gguf

    cache = tmp_path / "llama-cache"
    cache.mkdir()
    monkeypatch.setenv("LLAMA_CACHE", str(cache))
    meta = {"block_count": 2, "context_length": 2048, "embedding_length": 64,
            "attention.head_count": 8, "attention.head_count_kv": 2}  # fmt: skip
    path = write_gguf(cache / "tiny-Q8_0.gguf", "llama", meta,
                      llama_tensors(2, 64, 8, 2, 8, 64, 300), 300)  # fmt: skip
    app = make_app(tmp_path, "2x-mi50")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        await next_step(pilot)
        models = app.screen.query_one("#models", OptionList)
        await wait_for(lambda: _has_option(models, str(path)))
        index = models.get_option_index(str(path))
        models.highlighted = index
        models.action_select()
        await settle(pilot)
        model = app.session.plan.model
        assert model.repo == str(path) and model.quant == "Q8_0"
        assert model.source_args() == ["-m", str(path)]
        await pilot.press("q")


def _has_option(options, option_id: str) -> bool:
    try:
        options.get_option(option_id)
    except Exception:
        return False
    return True
