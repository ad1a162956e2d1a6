"""The model's download in the wizard's Build run step and in plain mode (`--yes`), from the
stand-in Hub on 127.0.0.1 (tests/hub_server.py) while the fixture flake builds for real; the
launch then loads the downloaded file with -m."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from llama_wizard.screens.build import BuildView
from tests.gguf_factory import write_gguf as write_model
from tests.hub_server import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    HubServer,
    fixture_hub,
    hub_server,
)
from tests.nix_fixtures import fixture_flake
from tests.plain_helpers import run_piped, stand_in_report
from tests.wizard_helpers import make_app, next_step, settle, wait_for

REPO = "someone/Tiny-GGUF"


async def test_build_run_downloads_the_model_beside_the_build(
    tmp_path: Path, hub: HubServer
) -> None:
    data = write_model(tmp_path / "src" / "Tiny-Q8_0.gguf").read_bytes()
    sha = hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    app = make_app(tmp_path, "no-gpu", simulated=False, model=f"{REPO}:Q8_0")
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        await next_step(pilot)
        assert app.step == "model"
        hub.state.throttle = 0.03  # slow enough to be seen running
        await next_step(pilot)
        assert app.step == "build-run"
        job = app.session.download_job
        assert job is not None and job.target.spec == f"{REPO}:Q8_0"
        # While it downloads, the step cannot be left.
        await wait_for(lambda: job.progress is not None and not job.done)
        assert "downloading" in (app.screen.can_leave() or "")
        await pilot.pause(0.4)
        status = str(app.screen.query_one("#download-status", Static).content)
        assert status.startswith(f"Downloading {REPO}:Q8_0") and " of " in status, status
        await wait_for(lambda: job.done, timeout=60)
        await wait_for(lambda: bool(app.screen.query(BuildView))
                       and app.screen.query_one(BuildView).final is not None)  # fmt: skip
        await pilot.pause(0.4)
        assert job.error is None and job.result is not None
        path = tmp_path / "hf-cache/models--someone--Tiny-GGUF/snapshots" / sha / "Tiny-Q8_0.gguf"
        assert job.result.path == path and path.read_bytes() == data
        status = str(app.screen.query_one("#download-status", Static).content)
        assert "here" in status and str(path) in status
        assert app.screen.can_leave() is None
        await next_step(pilot)
        assert app.step == "launch"
        spec = app.session.launch_spec(check_built=False)
        assert spec.args[:2] == ["-m", str(path)] and "-hf" not in spec.args
        # Back to the step: the model is here, nothing downloads again.
        gets = len(hub.gets())
        await pilot.press("escape")
        await settle(pilot)
        assert app.step == "build-run" and app.session.download_job is job
        await pilot.pause(0.4)
        assert str(path) in str(app.screen.query_one("#download-status", Static).content)
        assert len(hub.gets()) == gets
        await pilot.press("q")


async def test_a_simulated_machine_downloads_nothing(tmp_path: Path, hub: HubServer) -> None:
    hub.add(REPO, {"Tiny-Q8_0.gguf": write_model(tmp_path / "m.gguf").read_bytes()})
    app = make_app(tmp_path, "no-gpu", model=f"{REPO}:Q8_0")
    async with app.run_test(size=(100, 36)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        await next_step(pilot)
        await next_step(pilot)
        assert app.step == "build-run" and app.session.download_job is None
        assert app.screen.query_one("#download-area").has_class("-none")
        assert all(r.range is not None for r in hub.gets())  # the header (the fit) only
        await pilot.press("q")


def test_yes_downloads_then_launches_the_file(tmp_path: Path, hub: HubServer) -> None:
    data = write_model(tmp_path / "src" / "Tiny-Q8_0.gguf").read_bytes()
    sha = hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    flake = fixture_flake(tmp_path / "flake")
    result = run_piped(["--yes", "--flake", str(flake), "--model", f"{REPO}:Q8_0"], None,
                       tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    path = tmp_path / "hf-cache/models--someone--Tiny-GGUF/snapshots" / sha / "Tiny-Q8_0.gguf"
    assert f"The model is here: {path}" in result.stdout, result.stdout
    assert path.read_bytes() == data
    argv, _env = stand_in_report(result.stdout)
    assert "-m" in argv and argv[argv.index("-m") + 1] == str(path) and "-hf" not in argv
