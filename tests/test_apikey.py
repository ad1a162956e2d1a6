"""llama-server on an address other machines can reach requires an API key (tui/apikey.py): the
commands bind only what was chosen, the key is generated once (0600), reaches llama-server
through its environment and never a printed command or log, and the real llama-server refuses
a request without it."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llama_wizard.tui.apikey import (
    ApiKeyUnusable,
    api_key_path,
    ensure_api_key,
    is_loopback,
    needs_api_key,
)
from llama_wizard.tui.commands import commands_for, render_commands, server_spec
from llama_wizard.tui.launch import launch_spec
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
    free_port,
)
from tests.nix_fixtures import fixture_flake
from tests.test_commands import by_title, ready, service_config
from tests.test_launch_real import built, wizard


@pytest.fixture
def flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "flake", "documented")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
     ("192.168.1.10", False), ("myhost.lan", False), ("", False)],
)  # fmt: skip
def test_only_loopback_addresses_answer_this_machine_alone(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert needs_api_key(host) is (not loopback)
    # The person's own key (or key file) wins over the wizard's.
    assert not needs_api_key(host, ["--api-key-file", "/etc/key"])
    assert not needs_api_key(host, ["--api-key=mine"])


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "config" / "llama-server-api-key"
    key = ensure_api_key(path)
    assert len(key) >= 40 and key.strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_api_key(path) == key  # clients keep working from one run to the next
    path.chmod(0o644)
    assert ensure_api_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # made private again
    path.write_text("\n")
    with pytest.raises(ApiKeyUnusable) as error:
        ensure_api_key(path)
    assert str(path) in error.value.message and "Delete" in error.value.fix
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ApiKeyUnusable) as error:
        ensure_api_key(blocked / "key")
    assert "127.0.0.1" in error.value.fix


def test_commands_for_this_machine_only_bind_loopback(simulated, flake) -> None:
    plan, spec = ready(simulated, "2x-mi50", flake)
    commands = commands_for(plan, spec, host="127.0.0.1", port=8080)
    assert [c.title.split(" ")[0] for c in commands] == ["Build", "Run", "Serve", "NixOS",
                                                         "Docker", "Development"]  # fmt: skip
    for command in commands:
        if command.title.startswith("Docker"):
            continue
        assert "0.0.0.0" not in command.text, command.title
    # Docker: the published port is bound to 127.0.0.1; only inside the container does the
    # server listen on 0.0.0.0 (the published port arrives there, not on its loopback).
    docker_run = shlex.split(by_title(commands, "Docker").text.splitlines()[-1])
    assert docker_run[docker_run.index("-p") + 1] == "127.0.0.1:8080:8080"
    after_image = docker_run[docker_run.index("llama-cpp-rocm:latest") :]
    assert after_image[after_image.index("--host") + 1] == "0.0.0.0"
    assert sum(w.count("0.0.0.0") for w in docker_run) == 1
    # No key is needed, so none is made or mentioned.
    assert "LLAMA_API_KEY" not in render_commands(commands)
    assert not api_key_path().exists()


def test_a_reachable_server_gets_a_key_that_is_never_printed(simulated, flake, tmp_path) -> None:
    plan, spec = ready(simulated, "2x-mi50", flake)  # the run: llama-completion
    commands = commands_for(plan, spec, host="0.0.0.0", port=9000)
    key = api_key_path().read_text().strip()
    assert stat.S_IMODE(api_key_path().stat().st_mode) == 0o600
    text = render_commands(commands)
    assert key not in text
    server = by_title(commands, "Serve")
    assert server.title == "Serve with llama-server on 0.0.0.0:9000"
    # Why, where the key is, and the line that puts it in the variable the command refers to.
    assert "other machines can reach" in server.text and str(api_key_path()) in server.text
    export, command = server.text.splitlines()[-2:]
    assert export == f'export LLAMA_API_KEY="$(cat {api_key_path()})"'
    assert 'LLAMA_API_KEY="${LLAMA_API_KEY:?}"' in command
    assert shlex.split(command)[-4:] == ["--host", "0.0.0.0", "--port", "9000"]
    # NixOS: the module's apiKeyFile, not commented out, and the chosen host and port.
    service = service_config(by_title(commands, "NixOS").text, tmp_path, plan.build.system,
                             "rocm-gfx906")["service"]  # fmt: skip
    assert service["host"] == "0.0.0.0" and service["port"] == 9000
    assert service["apiKeyFile"] == "/run/secrets/llama-server-api-key"
    # Docker: the key passes by name, and the shell stops when it is not set.
    docker = by_title(commands, "Docker").text.splitlines()
    assert ': "${LLAMA_API_KEY:?}"' in docker
    docker_run = shlex.split(docker[-1])
    assert docker_run[docker_run.index("-p") + 1] == "0.0.0.0:9000:9000"
    assert docker_run[docker_run.index("LLAMA_API_KEY") - 1] == "-e"

    # The launch itself: the key is in llama-server's environment, not its arguments.
    launch = launch_spec(plan, program="llama-server", host="0.0.0.0", port=9000)
    assert launch.env["LLAMA_API_KEY"] == key
    assert key not in " ".join(launch.argv()) and key not in launch.shell_command()
    assert key not in " ".join(launch.display_argv())
    assert launch.environment({"PATH": "/bin"})["LLAMA_API_KEY"] == key
    # ... and for this machine only, none.
    local = launch_spec(plan, program="llama-server", host="127.0.0.1", port=9000)
    assert "LLAMA_API_KEY" not in local.env and "LLAMA_API_KEY" not in local.shell_command()
    assert "LLAMA_API_KEY" not in server_spec(launch, "127.0.0.1").env


def test_the_shown_command_will_not_start_an_open_server(simulated, flake) -> None:
    """The printed command, run by a real shell: without $LLAMA_API_KEY it stops before the
    program starts; after the export line it gives the program the key."""
    plan, _ = ready(simulated, "2x-mi50", flake)
    spec = launch_spec(plan, program="llama-server", host="0.0.0.0", check_built=False)
    probe = dataclasses.replace(spec, binary="/usr/bin/printenv", args=["LLAMA_API_KEY"])
    env = {"PATH": os.environ["PATH"]}
    refused = subprocess.run(["sh", "-c", probe.shell_command()], capture_output=True,
                             text=True, env=env, check=False)  # fmt: skip
    assert refused.returncode != 0 and "LLAMA_API_KEY" in refused.stderr
    assert refused.stdout == ""
    from llama_wizard.tui.apikey import export_line

    script = f"{export_line()}\n{probe.shell_command()}"
    given = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env,
                           check=False)  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert given.stdout.strip() == api_key_path().read_text().strip()


def _status(url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_real_llama_server_on_every_interface_requires_the_key(llamacpp_flake, dense_gguf) -> None:
    flake = built(llamacpp_flake)
    port = free_port()
    args = ["run", "--server", "--json", "--flake", flake, "--model", str(dense_gguf),
            "--host", "0.0.0.0", "--port", str(port)]  # fmt: skip
    with wizard(*args) as running:
        running.until(lambda e: e["event"] == "listening")
        key = api_key_path().read_text().strip()
        url = f"http://127.0.0.1:{port}/v1/models"
        assert _status(url) == 401
        assert _status(url, "not-the-key") == 401
        assert _status(url, key) == 200
        running.popen.send_signal(signal.SIGINT)
        running.finish()
    logged = "\n".join(running.stdout + running.stderr)
    assert key not in logged
    assert "other machines can reach" in logged  # run says why there is a key


def test_the_session_commands_follow_the_chosen_host(flake) -> None:
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.session import Overrides, WizardSession

    with open_machine(None, "2x-mi50") as machine:
        session = WizardSession(machine, None, Overrides(flake=flake))
        session.make_plan()
        assert session.api_key_note() is None
        local = render_commands(session.commands())
        assert "--host 127.0.0.1 --port 8080" in local and "LLAMA_API_KEY" not in local
        session.set_launch(host="0.0.0.0", port=9090)
        note = session.api_key_note()
        assert note and "0.0.0.0" in note and str(api_key_path()) in note
        commands = session.commands()
        assert by_title(commands, "Serve").title == "Serve with llama-server on 0.0.0.0:9090"
        text = render_commands(commands)
        assert api_key_path().read_text().strip() not in text
        assert 'LLAMA_API_KEY="${LLAMA_API_KEY:?}"' in text
        # A key that cannot be kept: only the build, and a note that says why and what to do.
        api_key_path().unlink()
        api_key_path().mkdir()
        assert [c.title.split(" ")[0] for c in session.commands()] == ["Build"]
        assert any("127.0.0.1" in n for n in session.take_notes())
