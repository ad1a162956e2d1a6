"""`llama-wizard service` and the Done step's "Keep the server running": the unit checked by
the real `systemd-analyze verify` (ExecStart= the real llama-server of the test build), systemd's
quoting, the dry run through the real CLI, the refusal where systemd is not running (this
machine, and CI), NixOS (a fixture root with /etc/NIXOS), and the Done step with the pilot.

install/status/uninstall really run only where systemd runs (/run/systemd/system): that test is
skipped elsewhere, saying why."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llama_wizard.tui import service
from llama_wizard.tui.launch import launch_spec
from llama_wizard.tui.service import exec_line, systemd_word
from tests.helpers import run_cli
from tests.llamacpp import fixture_dense_gguf, fixture_llamacpp_bin, fixture_llamacpp_flake  # noqa: F401
from tests.nix_fixtures import fixture_flake
from tests.test_launch import plan_for
from tests.wizard_helpers import make_app, next_step, settle, wait_for

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
NASTY = ["two words", 'a "quote"', "it's", "$HOME", "${PATH}", "100%", "%n", "back\\slash",
         "tab\there", "new\nline", ";", "", "plain-word", "ünïcode"]  # fmt: skip


def verify(unit_text: str, directory: Path, name: str = "llama-wizard-server-8080.service",
           user: bool = False) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """The real systemd-analyze verify on the unit (offline: systemd need not run)."""
    path = directory / name
    path.write_text(unit_text)
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *(["--user"] if user else []),
                           str(path)], capture_output=True, text=True, check=False)  # fmt: skip


def systemd_split(line: str) -> list[str]:
    """ExecStart= as systemd.service(5) "Command lines" says it is read: specifiers (%%), words
    split on white space, "..." and '...' quoting, C escapes, then $$ for a literal $."""
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", " ": " "}
    line = line.replace("%%", "\0")
    assert "%" not in line, f"an unescaped specifier in {line!r}"
    words: list[str] = []
    position = 0
    while position < len(line):
        while position < len(line) and line[position] in " \t":
            position += 1
        if position >= len(line):
            break
        word, quote, started = "", None, True
        while position < len(line):
            char = line[position]
            if quote is None and char in " \t":
                break
            if char in "\"'" and (quote is None or quote == char):
                quote = None if quote == char else char
            elif char == "\\":
                following = line[position + 1]
                if following == "x":
                    word += chr(int(line[position + 2 : position + 4], 16))
                    position += 3
                else:
                    assert following in escapes, f"unknown escape \\{following}"
                    word += escapes[following]
                    position += 1
            else:
                word += char
            position += 1
        assert quote is None, "unbalanced quoting"
        assert started
        words.append(re.sub(r"\$\$", "$", word).replace("\0", "%"))
    return words


# --- systemd's quoting ---------------------------------------------------------------------------


def test_nasty_arguments_read_back_as_they_were(tmp_path: Path, llamacpp_bin: Path) -> None:
    argv = [str(llamacpp_bin / "llama-server"), *NASTY]
    line = exec_line(argv)
    assert systemd_split(line) == argv
    assert "100%%" in line and "$$HOME" in line and "$${PATH}" in line and '"two words"' in line
    # systemd itself: no unbalanced quotes, unknown escapes or unresolved specifiers.
    text = f"[Unit]\nDescription=x\n\n[Service]\nExecStart={line}\n"
    checked = verify(text, tmp_path, "nasty.service")
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


def test_a_percent_left_alone_is_what_systemd_refuses(tmp_path: Path, llamacpp_bin: Path) -> None:
    """The check above can fail: the unescaped word is refused by the same verify."""
    text = f"[Service]\nExecStart={llamacpp_bin / 'llama-server'} 50%Z\n"
    checked = verify(text, tmp_path, "bad.service")
    assert checked.returncode != 0 and "specifier" in checked.stderr


def test_environment_values_keep_dollars_and_double_percents() -> None:
    assert systemd_word("A=$B 5%", dollar=False) == '"A=$B 5%%"'
    assert systemd_word("plain") == "plain"
    assert systemd_word("") == '""'
    with pytest.raises(ValueError):
        exec_line(["llama-server", "-m", "x"])


# --- the unit ------------------------------------------------------------------------------------


def cpu_spec(
    simulated, tmp_path: Path, llamacpp_bin: Path, model: str, host: str, path: str | None = None
):
    """A CPU plan for `model` (run from the file `path`, when given: a download's), its
    llama-server being the test build's real one."""
    flake = fixture_flake(tmp_path / "flake", "documented")
    plan = plan_for(simulated, "no-gpu", flake, model=model)
    spec = launch_spec(plan, program="llama-server", host=host, model_path=path, check_built=False)
    return plan, dataclasses.replace(spec, binary=str(llamacpp_bin / "llama-server"))


def test_root_unit_for_a_local_model_verifies(
    simulated, tmp_path, llamacpp_bin, dense_gguf
) -> None:
    plan, spec = cpu_spec(simulated, tmp_path, llamacpp_bin, str(dense_gguf), "127.0.0.1")
    unit = service.service_unit(plan, spec, "127.0.0.1", 8080, euid=0)
    assert unit.location.path == Path("/etc/systemd/system/llama-wizard-server-8080.service")
    text = unit.text
    for line in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
        "PrivateDevices=yes",
    ):
        assert line in text.splitlines(), line
    exec_start = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    argv = systemd_split(exec_start.removeprefix("ExecStart="))
    assert argv[0] == os.path.realpath(llamacpp_bin / "llama-server")
    assert argv[argv.index("-m") + 1] == str(dense_gguf)
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8080"]
    assert "LoadCredential" not in text and unit.api_key_file is None
    assert unit.commands == [["systemctl", "daemon-reload"],
                             ["systemctl", "enable", "--now", unit.location.name]]  # fmt: skip
    checked = verify(text, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_a_model_in_a_home_directory_is_bound_in_read_only(
    simulated, tmp_path, llamacpp_bin
) -> None:
    model = "/home/some one/models/model.gguf"  # where a download to the HF cache lands
    plan, spec = cpu_spec(simulated, tmp_path, llamacpp_bin, "Qwen/Qwen3-0.6B-GGUF", "127.0.0.1",
                          path=model)  # fmt: skip
    unit = service.service_unit(plan, spec, "127.0.0.1", 8080, euid=0)
    lines = unit.text.splitlines()
    assert "ProtectHome=tmpfs" in lines
    assert 'BindReadOnlyPaths="/home/some one/models"' in lines
    # The test build's llama-server, when it is under /root or /home too (the cache of
    # scripts/llamacpp, as in CI), gets its folder (bin/ and lib/) bound in; elsewhere not.
    build = os.path.realpath(llamacpp_bin.parent)
    in_home = build.startswith(("/root/", "/home/"))
    assert (f"BindReadOnlyPaths={build}" in lines) == in_home, lines
    assert any("does not exist" in note for note in unit.notes)
    checked = verify(unit.text, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_user_unit_on_a_reachable_host_reads_the_key_from_its_file(
    simulated, tmp_path, llamacpp_bin, dense_gguf
) -> None:
    plan, spec = cpu_spec(simulated, tmp_path, llamacpp_bin, str(dense_gguf), "0.0.0.0")
    home = tmp_path / "home"
    environ = {"HOME": str(home), "USER": "someone"}
    unit = service.service_unit(plan, spec, "0.0.0.0", 8123, euid=4242, environ=environ)
    assert unit.location.scope == "user"
    assert unit.location.path == home / ".config/systemd/user/llama-wizard-server-8123.service"
    assert unit.commands[0] == ["loginctl", "enable-linger", "someone"]
    assert unit.commands[1:] == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", unit.location.name],
    ]
    key = unit.api_key_file.read_text().strip()
    assert key and key not in unit.text and key not in json.dumps(unit.to_json())
    assert f"Environment=LLAMA_ARG_API_KEY_FILE={unit.api_key_file}" in unit.text.splitlines()
    assert "DynamicUser=yes" not in unit.text and "WantedBy=default.target" in unit.text
    checked = verify(unit.text, tmp_path, unit.location.name)
    assert checked.returncode == 0, checked.stderr


def test_an_hf_model_gets_a_cache_and_a_note(simulated, tmp_path, llamacpp_bin) -> None:
    plan, spec = cpu_spec(simulated, tmp_path, llamacpp_bin, "Qwen/Qwen3-0.6B-GGUF", "127.0.0.1")
    unit = service.service_unit(plan, spec, "127.0.0.1", 8080, euid=0)
    lines = unit.text.splitlines()
    assert "CacheDirectory=llama-wizard-server-8080" in lines
    assert "Environment=LLAMA_CACHE=/var/cache/llama-wizard-server-8080" in lines
    assert any("network" in note for note in unit.notes)
    checked = verify(unit.text, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_rocm_units_allow_only_the_gpu_devices(simulated, tmp_path, llamacpp_bin) -> None:
    flake = fixture_flake(tmp_path / "flake", "documented")
    plan = plan_for(simulated, "2x-mi50", flake, model="Qwen/Qwen3-0.6B-GGUF")
    spec = launch_spec(plan, program="llama-server", check_built=False)
    spec = dataclasses.replace(spec, binary=str(llamacpp_bin / "llama-server"))
    unit = service.service_unit(plan, spec, "127.0.0.1", 8080, euid=0)
    lines = unit.text.splitlines()
    assert {"DeviceAllow=/dev/kfd rw", "DeviceAllow=char-drm rw",
            "SupplementaryGroups=render video"} <= set(lines)  # fmt: skip
    assert "Environment=HSA_OVERRIDE_GFX_VERSION=9.0.6" in lines
    checked = verify(unit.text, tmp_path)
    assert checked.returncode == 0, checked.stderr


# --- the CLI -------------------------------------------------------------------------------------


def built(flake: str) -> str:
    result = run_cli("build", "--flake", flake, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return flake


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_dry_run_json(host: str, llamacpp_flake, dense_gguf, tmp_path: Path) -> None:
    flake = built(llamacpp_flake)
    result = run_cli("service", "install", "--dry-run", "--json", "--flake", flake,
                     "--model", str(dense_gguf), "--host", host, "--port", "8181")  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {"unit_path", "unit_text", "commands", "url"} <= set(document)
    assert document["url"] == "http://127.0.0.1:8181/"
    assert document["commands"][-1][-1] == "llama-wizard-server-8181.service"
    text = document["unit_text"]
    if host == "0.0.0.0":
        key_file = Path(document["api_key_file"])
        key = key_file.read_text().strip()
        assert (key_file.stat().st_mode & 0o777) == 0o600
        assert str(key_file) in text and key not in result.stdout + result.stderr
    else:
        assert "api_key_file" not in document and "LLAMA_ARG_API_KEY_FILE" not in text
    # ExecStart= is the real llama-server in the Nix store: systemd reads the unit as it is.
    checked = verify(text, tmp_path, Path(document["unit_path"]).name)
    assert checked.returncode == 0, checked.stderr


def test_no_systemd_is_refused_with_what_to_do(llamacpp_flake, dense_gguf) -> None:
    if service.systemd_running():
        pytest.skip("systemd runs here: the refusal is for machines without it")
    for action in (["install", "--flake", built(llamacpp_flake), "--model", str(dense_gguf)],
                   ["status"], ["stop"], ["uninstall"], ["logs"]):  # fmt: skip
        result = run_cli("service", *action)
        assert result.returncode == 1, (action, result.stderr)
        assert "systemd is not running" in result.stderr and "tmux" in result.stderr


def test_simulated_machines_get_no_service() -> None:
    result = run_cli("service", "install", "--simulate", "2x-mi50")
    assert result.returncode == 2 and "--dry-run" in result.stderr


def test_nixos_prints_the_module_snippet(simulated, tmp_path: Path) -> None:
    box = simulated("2x-mi50")
    Path(box.root, "etc").mkdir(exist_ok=True)
    Path(box.root, "etc", "NIXOS").write_text("")
    flake = fixture_flake(tmp_path / "flake", "documented")
    env = {**os.environ, **box.env()}
    result = run_cli("service", "install", "--root", box.root, "--flake", flake,
                     "--model", "Qwen/Qwen3-0.6B-GGUF", "--json", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["nixos"] is True
    assert "services.llama-server" in document["snippet"]
    assert document["commands"] == [["sudo", "nixos-rebuild", "switch", "--flake", "/etc/nixos"]]


def test_dry_run_of_the_other_actions() -> None:
    result = run_cli("service", "uninstall", "--dry-run", "--json", "--port", "9000")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    systemctl = ["systemctl"] if os.geteuid() == 0 else ["systemctl", "--user"]
    assert document["commands"] == [
        [*systemctl, "disable", "--now", "llama-wizard-server-9000.service"],
        [*systemctl, "daemon-reload"],
    ]


NO_SYSTEMD = (
    "systemd is not running here (/run/systemd/system is missing: a container, as on this "
    "machine and in CI); install/status/uninstall need it"
)


@pytest.mark.skipif(not service.systemd_running(), reason=NO_SYSTEMD)
def test_install_status_uninstall_for_real(llamacpp_flake, dense_gguf) -> None:
    from tests.llamacpp import free_port

    flake = built(llamacpp_flake)
    port = str(free_port())
    model = ["--flake", flake, "--model", str(dense_gguf), "--port", port]
    try:
        installed = run_cli("service", "install", "--json", *model, timeout=400)
        assert installed.returncode == 0, installed.stderr
        status = run_cli("service", "status", "--json", "--port", port)
        assert status.returncode == 0 and json.loads(status.stdout)["active_state"] == "active"
    finally:
        removed = run_cli("service", "uninstall", "--port", port)
    assert removed.returncode == 0, removed.stderr


# --- the Done step -------------------------------------------------------------------------------


async def test_done_step_shows_the_unit_and_refuses_without_systemd(tmp_path: Path) -> None:
    if service.systemd_running():
        pytest.skip("systemd runs here: the refusal is for machines without it")
    app = make_app(tmp_path, "2x-mi50", simulated=False, model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        app.goto("done")
        await settle(pilot)
        await pilot.press("k")
        await pilot.pause()
        dialog = app.screen
        assert dialog.__class__.__name__ == "ServiceDialog"
        shown = dialog.shown_text
        assert "llama-wizard-server-8080.service" in shown and "ExecStart=" in shown
        assert "systemctl daemon-reload" in shown
        await pilot.press("y")
        await wait_for(lambda: "Installing" not in app.screen.status_text())
        said = app.screen.status_text()
        assert "systemd is not running" in said and "tmux" in said, said
        await pilot.press("ctrl+c")


# --- plain mode ----------------------------------------------------------------------------------


def test_plain_mode_shows_the_unit_and_refuses_without_systemd(tmp_path: Path) -> None:
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.plain.wizard import PlainWizard
    from llama_wizard.tui.session import Overrides, WizardSession
    from tests.plain_helpers import line_prompter

    if service.systemd_running():
        pytest.skip("systemd runs here: the refusal is for machines without it")
    flake = fixture_flake(tmp_path / "flake", "documented")
    overrides = Overrides(flake=flake, model="Qwen/Qwen3-0.6B-GGUF")
    prompter, out, prompts = line_prompter("y")
    with open_machine(None, None) as machine:  # this machine: no systemd here
        session = WizardSession(machine, None, overrides)
        session.make_plan()
        PlainWizard(session, prompter, out=out, err=out).keep_running()
    text = out.getvalue()
    assert "llama-wizard-server-8080.service" in text and "ExecStart=" in text
    assert "Install and start it?" in prompts[0]
    assert "systemd is not running" in text and "tmux" in text
    # A simulated machine's unit is shown, never installed (nothing is asked).
    prompter, out, prompts = line_prompter()
    with open_machine(None, "2x-mi50") as machine:
        session = WizardSession(machine, None, overrides)
        session.make_plan()
        PlainWizard(session, prompter, out=out, err=out).keep_running()
    assert "DeviceAllow=/dev/kfd rw" in out.getvalue() and not prompts
    assert "simulated machine: shown, not installed" in out.getvalue()
