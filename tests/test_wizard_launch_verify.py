"""The Launch step shows llama.cpp's own word on the fit (the built output's llama-fit-params)
above the command, without holding up the run: the real tools, built with real Nix; a build
without llama-fit-params (the stand-in flake) gives one dim line saying why it was not asked;
a simulated machine is not asked at all."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from textual.widgets import Static

from llama_wizard.tui.verify import FIT_PARAMS
from llama_wizard.tui.widgets import CommandText
from tests.helpers import run_cli
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
)
from tests.wizard_helpers import make_app, next_step, settle, wait_for


def test_the_launch_step_shows_llamacpps_own_fit(
    tmp_path: Path, llamacpp_flake: str, dense_gguf: Path
) -> None:
    built = run_cli("build", "--flake", llamacpp_flake, "--simulate", "no-gpu", timeout=600)
    assert built.returncode == 0, built.stderr

    async def scenario() -> tuple[str, set[str], str, str]:
        # As if on the real machine (not marked simulated): llama.cpp is asked only there.
        app = make_app(
            tmp_path, "no-gpu", simulated=False, flake=llamacpp_flake, model=str(dense_gguf)
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await next_step(pilot)  # Build
            await next_step(pilot)  # Model
            await next_step(pilot)  # Build run: built already
            await pilot.press("ctrl+n")  # Launch: run at once, while llama.cpp is being asked
            await wait_for(lambda: app.step == "launch" and bool(app.screen.query("#command")))
            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(lambda: app.launched is not None)  # not held up by the question
            line = app.screen.query_one("#llamacpp-fit", Static)
            await wait_for(lambda: line.display and "llama.cpp" in str(line.render()), 120)
            await wait_for(lambda: app.launched.finished and not app.launch_running, 120)
            await pilot.pause()
            status = str(app.screen.query_one("#launch-status", Static).render())
            command = app.screen.query_one("#command", CommandText).text
            return str(line.render()), set(line.classes), status, command

    text, classes, status, command = asyncio.run(scenario())
    assert text.startswith("llama.cpp: fits at "), text
    assert "system RAM" in text and "not asked" not in text and "disagree" not in text
    assert not classes & {"disagree", "not-asked"}
    assert "llama-completion exited with status 0" in status, status
    assert "llama-completion -hf" in command or "llama-completion -m" in command, command


def test_the_launch_step_says_when_llamacpp_disagrees(
    tmp_path: Path, llamacpp_flake: str, dense_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = run_cli("build", "--flake", llamacpp_flake, "--simulate", "no-gpu", timeout=600)
    assert built.returncode == 0, built.stderr
    # llama.cpp's own setting for the margin it keeps (--fit-target): all of the RAM, so it
    # cannot fit the model while the estimate says it fits.
    host_mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)
    monkeypatch.setenv("LLAMA_ARG_FIT_TARGET", str(host_mib))

    async def scenario() -> tuple[str, set[str], str]:
        app = make_app(
            tmp_path, "no-gpu", simulated=False, flake=llamacpp_flake, model=str(dense_gguf)
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            for _ in range(4):  # Build, Model, Build run (built already), Launch
                await next_step(pilot)
            assert app.step == "launch"
            line = app.screen.query_one("#llamacpp-fit", Static)
            await wait_for(lambda: line.display, 120)
            return str(line.render()), set(line.classes), str(line.styles.text_style)

    text, classes, style = asyncio.run(scenario())
    first, second = text.split("\n")
    assert first.startswith("llama.cpp: cannot fit it"), text
    assert second.startswith("llama.cpp and the estimate disagree: The estimate says "), text
    assert "disagree" in classes and "bold" in style


def test_a_build_without_llama_fit_params_says_so_in_one_dim_line(tmp_path: Path) -> None:
    async def scenario(simulated: bool) -> tuple[bool, str, set[str]]:
        app = make_app(tmp_path / str(simulated), "2x-mi50", simulated=simulated,
                       model="Qwen/Qwen3-0.6B-GGUF")  # fmt: skip
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            for _ in range(3):  # Build, Model, Build run (the stand-in flake, built for real)
                await next_step(pilot)
            await wait_for(lambda: app.session.build_status().state == "built", 300)
            # On the real machine the model's download runs beside the build (and fails: no
            # Hub here); the step is left once it has ended.
            job = app.session.download_job
            await wait_for(lambda: job is None or job.done, 60)
            await next_step(pilot)  # Launch
            assert app.step == "launch"
            line = app.screen.query_one("#llamacpp-fit", Static)
            return line.display, str(line.render()), set(line.classes)

    shown, text, classes = asyncio.run(scenario(simulated=False))
    assert shown and "not-asked" in classes, text
    assert text.startswith(f"llama.cpp not asked: This build has no {FIT_PARAMS}"), text
    assert "newer llama.cpp" in text and "\n" not in text.strip()
    # A simulated machine: llama.cpp would see this machine, not the profile's GPUs: no line.
    shown, text, _ = asyncio.run(scenario(simulated=True))
    assert not shown and text == "", text
