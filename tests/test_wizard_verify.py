"""The Model step asks llama.cpp itself (the built output's llama-fit-params) about the chosen
quant and shows its answer beside the estimate: the real tools, built with real Nix."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.widgets import Static

from tests.helpers import run_cli
from tests.llamacpp import (  # noqa: F401
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
)
from tests.wizard_helpers import make_app, next_step, settle, wait_for


def test_the_model_step_shows_llamacpps_own_fit_once_built(
    tmp_path: Path, llamacpp_flake: str, dense_gguf: Path
) -> None:
    built = run_cli("build", "--flake", llamacpp_flake, "--simulate", "no-gpu", timeout=600)
    assert built.returncode == 0, built.stderr

    async def scenario() -> str:
        # As if on the real machine (not marked simulated): llama.cpp is asked only there.
        app = make_app(
            tmp_path, "no-gpu", simulated=False, flake=llamacpp_flake, model=str(dense_gguf)
        )
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await next_step(pilot)  # Build
            await next_step(pilot)  # Model
            line = app.screen.query_one("#llamacpp-fit", Static)
            await wait_for(lambda: "llama.cpp" in str(line.render()), timeout=120)
            return str(line.render())

    text = asyncio.run(scenario())
    assert text.startswith("llama.cpp: "), text
    assert "not asked" not in text
