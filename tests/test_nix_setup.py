"""Root on Debian with nix-bin and no daemon (issue 12): Nix's default `build-users-group =
nixbld` names a group that is not there, so every build fails. It is found before building
(plan warnings, the pre-build check, the Build step) with the exact fix, and the wizard gets
round it for its own nix commands when the person agrees (--nix-without-build-users, the Build
step's button, plain mode's choice; remembered per machine).

This machine is that machine: the tests drop `build-users-group =` from the tests' NIX_CONFIG
and run the real Nix."""

from __future__ import annotations

import grp
import json
import os
from pathlib import Path

import pytest
from textual.widgets import Button, Static

from llama_wizard.nix.build import follow, read_record, start_build
from llama_wizard.nix.diagnose import diagnose
from llama_wizard.nix.environment import (
    DAEMON_SOCKET,
    NIX_STATE_DIR,
    probe,
    setup_problem,
    without_build_users,
)
from llama_wizard.nix.errors import NixSetupError
from llama_wizard.nix.events import BuildProgress
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.session import Overrides, WizardSession
from llama_wizard.tui.settings import SettingsStore
from tests.helpers import run_cli
from tests.nix_fixtures import fixture_flake, fresh_builds
from tests.plain_helpers import run_piped, saved_choices
from tests.wizard_helpers import make_app, next_step, settle, wait_for
from tests.wizard_helpers import saved_choices as wizard_saved


def _no_nixbld_group() -> bool:
    try:
        grp.getgrnam("nixbld")
    except KeyError:
        return True
    return False


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not _no_nixbld_group() or not os.access(NIX_STATE_DIR, os.W_OK),
    reason="needs root using the store directly, with no nixbld group (Debian nix-bin alone)",
)


@pytest.fixture
def no_build_users_setting(monkeypatch: pytest.MonkeyPatch) -> str:
    """NIX_CONFIG as the tests have it, less `build-users-group =`: Nix's default applies."""
    lines = os.environ["NIX_CONFIG"].splitlines()
    config = "\n".join(line for line in lines if not line.startswith("build-users-group")) + "\n"
    monkeypatch.setenv("NIX_CONFIG", config)
    return config


@pytest.fixture
def flake(tmp_path: Path) -> str:
    # New derivations: an output already in the store would build without any build user.
    return fresh_builds(fixture_flake(tmp_path / "flake", "documented"))


def test_the_probe_finds_the_missing_group(no_build_users_setting) -> None:
    problem = probe().setup_problem
    assert problem is not None and problem.code == "build_users_group_missing"
    assert problem.wizard_can_apply
    assert "'nixbld'" in problem.message
    fixes = ("sudo apt install nix-setup-systemd", "groupadd --system nixbld",
             "`build-users-group =` to /etc/nix/nix.conf", "--nix-without-build-users")  # fmt: skip
    for fix in fixes:
        assert fix in problem.fix
    assert probe(env=without_build_users(os.environ)).setup_problem is None


def test_really_every_build_fails_without_the_group(no_build_users_setting, flake, tmp_path):
    """What the check foresees is what Nix does; and the build's report has the same fix."""
    record = start_build(["nix", "build", f"{flake}#default"], "default", tmp_path / "state")
    progress = BuildProgress()
    for batch in follow(record):
        for line in batch:
            progress.feed(line)
    record = read_record(record)
    assert record.status == "failed"
    report = diagnose(progress, record)
    assert report.nix_error is not None
    assert "specified in 'build-users-group' does not exist" in report.nix_error.message
    assert report.cause is not None and report.cause.code == "build_users_group_missing"
    assert "nix-setup-systemd" in report.cause.fix


def test_without_build_users_keeps_the_other_settings() -> None:
    env = without_build_users({"NIX_CONFIG": "sandbox = false\nbuild-users-group = nixbld\n"})
    assert env["NIX_CONFIG"].splitlines() == ["sandbox = false", "build-users-group ="]
    assert without_build_users({})["NIX_CONFIG"] == "build-users-group =\n"


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        # Non-root, no daemon, the store not writable: nothing can build.
        (dict(euid=1000, exists=lambda p: False, writable=lambda p: False),
         "nix_daemon_not_running"),
        # Non-root, a daemon it may not talk to.
        (dict(euid=1000, exists=lambda p: True, writable=lambda p: False), "nix_daemon_no_access"),
        # Non-root with a daemon: the daemon's build users, none of ours.
        (dict(euid=1000, exists=lambda p: True, writable=lambda p: p == DAEMON_SOCKET), None),
        # Root with the group there.
        (dict(euid=0, group_exists=lambda g: True), None),
    ],
)  # fmt: skip
def test_the_setup_decision_on_other_machines(facts, code) -> None:
    problem = setup_problem({"build-users-group": "nixbld", "store": "auto"}, env={}, **facts)
    assert (problem.code if problem else None) == code


def test_root_through_the_daemon_needs_no_group_here() -> None:
    problem = setup_problem({"build-users-group": "nixbld"}, env={"NIX_REMOTE": "daemon"},
                            euid=0, group_exists=lambda g: False)  # fmt: skip
    assert problem is None


def test_plan_warns_and_build_refuses_with_the_fix(no_build_users_setting, flake) -> None:
    planned = run_cli("plan", "--json", "--simulate", "no-gpu", "--flake", flake)
    assert planned.returncode == 0, planned.stderr
    warnings = json.loads(planned.stdout)["warnings"]
    assert warnings[0]["code"] == "build_users_group_missing"
    text = run_cli("plan", "--simulate", "no-gpu", "--flake", flake)
    assert "build_users_group_missing" in text.stdout and "nix-setup-systemd" in text.stdout

    refused = run_cli("build", "--simulate", "no-gpu", "--flake", flake, timeout=120)
    assert refused.returncode == 1
    assert "does not exist" in refused.stderr and "build-users-group =" in refused.stderr
    assert "started the build" not in refused.stderr

    built = run_cli("build", "--simulate", "no-gpu", "--flake", flake,
                    "--nix-without-build-users", timeout=120)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip().startswith("/nix/store/")
    agreed = run_cli("plan", "--json", "--simulate", "no-gpu", "--flake", flake,
                     "--nix-without-build-users")  # fmt: skip
    codes = [w["code"] for w in json.loads(agreed.stdout)["warnings"]]
    assert "nix_without_build_users" in codes and "build_users_group_missing" not in codes


def test_the_session_applies_the_agreement_to_every_nix_command(no_build_users_setting, flake):
    with open_machine(None, "no-gpu") as machine:
        session = WizardSession(machine, SettingsStore.load(), Overrides(flake=flake))
        plan = session.make_plan()
        assert session.setup_problem() is not None
        with pytest.raises(NixSetupError) as refused:
            session.check_can_build()
        assert refused.value.problem.wizard_can_apply
        session.allow_nix_without_build_users()
        assert session.plan is None  # planned again, with the setting
        plan = session.make_plan()
        assert session.setup_problem() is None
        session.check_can_build()
        config = session.machine.env["NIX_CONFIG"].splitlines()
        assert config[-1] == "build-users-group =" and "sandbox = false" in config
        assert plan.warnings[0].code == "nix_without_build_users"
        assert session.save() is None
    key = "simulated:no-gpu"
    assert SettingsStore.load().choices_for(key, key, simulated=True).nix_without_build_users


def test_a_bad_saved_agreement_is_dropped_with_a_note(tmp_path) -> None:
    from llama_wizard.tui.settings import choices_from_json

    notes: list[str] = []
    choices = choices_from_json({"nix_without_build_users": "yes"}, "this machine", notes)
    assert choices.nix_without_build_users is False
    assert notes and "nix_without_build_users" in notes[0]


async def test_the_build_step_offers_it_and_the_build_then_works(
    tmp_path, no_build_users_setting
) -> None:
    flake = fresh_builds(fixture_flake(tmp_path / "flake", "documented"))
    app = make_app(tmp_path, "no-gpu", flake=flake, model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        assert app.step == "build"
        button = app.screen.query_one("#nix-without-build-users", Button)
        assert button.display
        status = str(app.screen.query_one("#plan-status", Static).content)
        assert "Nix cannot build here as it is set up" in status
        assert app.session.plan.warnings[0].code == "build_users_group_missing"
        button.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert app.session.nix_without_build_users
        assert app.session.setup_problem() is None
        assert not app.screen.query_one("#nix-without-build-users", Button).display
        await next_step(pilot)
        assert app.step == "model"
        assert wizard_saved("simulated:no-gpu").nix_without_build_users
        await next_step(pilot)
        assert app.step == "build-run"
        from llama_wizard.screens.build import BuildView

        await wait_for(lambda: bool(app.screen.query(BuildView))
                       and app.screen.query_one(BuildView).final is not None)  # fmt: skip
        assert app.screen.query_one(BuildView).final.status == "succeeded"


async def test_without_agreeing_the_build_run_step_shows_the_fix(
    tmp_path, no_build_users_setting
) -> None:
    flake = fresh_builds(fixture_flake(tmp_path / "flake", "documented"))
    app = make_app(tmp_path, "no-gpu", flake=flake, model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        await next_step(pilot)
        await next_step(pilot)
        assert app.step == "build-run"
        status = str(app.screen.query_one("#build-status", Static).content)
        assert "does not exist" in status and "nix-setup-systemd" in status


def test_plain_mode_asks_and_remembers(no_build_users_setting, flake, tmp_path) -> None:
    # Hardware, build, model: the defaults; build it now: yes; then the check refuses and the
    # second choice is running without build users; build it now; then quit at the launch.
    args = ["--plain", "--simulate", "no-gpu", "--flake", flake, "--model",
            "Qwen/Qwen3-0.6B-GGUF"]  # fmt: skip
    result = run_piped(args, "\n\n\n\n2\n\nq\n", tmp_path)
    assert "specified in 'build-users-group' does not exist" in result.stdout
    assert "without build users" in result.stdout
    assert "built default" in result.stdout + result.stderr, result.stdout[-3000:]
    assert saved_choices("simulated:no-gpu").get("nix_without_build_users") is True
