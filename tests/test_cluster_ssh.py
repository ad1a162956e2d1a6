"""The cluster's SSH layer against a real sshd on 127.0.0.1 (tests/sshd.py): remote detection by
the far side's llama-wizard and by the probe sent over, the errors of hosts that cannot be used,
the address a host is reached by, and the link measurement; and the probe bundle run by a python
that has no llama-wizard installed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from llama_wizard.detect.simulate import materialize
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.tui.cluster.network import (
    LinkMeasure,
    load_seconds,
    measure_link,
    slow_link_words,
)
from llama_wizard.tui.cluster.probe_bundle import probe_argv, probe_bundle
from llama_wizard.tui.cluster.ssh import (
    RemoteError,
    SshOptions,
    is_private_address,
    local_address_towards,
    remote_inventory,
    resolve_address,
    run_remote,
    ssh_argv,
)
from tests.sshd import (
    PROFILE,
    VENV_BIN,
    SshRig,
    fixture_ssh_rig,  # noqa: F401
)

SYSTEM_PYTHON = "/usr/bin/python3"


def expected_inventory(tmp_path: Path) -> dict:
    """The 2x-mi50 profile detected here, as the far side should report it."""
    from llama_wizard.detect.inventory import detect

    machine = materialize(PROFILE, tmp_path / "expected")
    inventory = detect(SystemRoot(machine.root), env=machine.env())
    inventory.simulated = PROFILE
    return inventory.to_json()


def test_ssh_argv_quotes_the_remote_command_once() -> None:
    argv = ssh_argv("user@gpu1", ["sh", "-c", "echo 'a b'; echo $HOME", "x y"], SshOptions())
    assert argv[0] == "ssh"
    assert "-F" not in argv
    assert argv[argv.index("BatchMode=yes") - 1] == "-o"
    assert "ConnectTimeout=10" in argv
    assert argv[-3:-1] == ["user@gpu1", "--"]
    # The far shell splits it back into exactly the words given.
    assert shlex.split(argv[-1]) == ["sh", "-c", "echo 'a b'; echo $HOME", "x y"]
    with_config = ssh_argv("gpu1", ["true"], SshOptions(config="/tmp/cfg", connect_timeout=2.5))
    assert with_config[1:3] == ["-F", "/tmp/cfg"]
    assert "ConnectTimeout=3" in with_config


def test_remote_command_runs_with_its_own_status(ssh_rig: SshRig) -> None:
    result = run_remote("gpu-b", ["sh", "-c", "echo \"$1\"; exit 7", "sh", "it's here"],
                        ssh_rig.options, timeout=30)  # fmt: skip
    assert result.returncode == 7
    assert result.text == "it's here\n"
    echoed = run_remote("gpu-b", ["cat"], ssh_rig.options, timeout=30, input=b"\x00\xffbytes")
    assert echoed.stdout == b"\x00\xffbytes"


def test_remote_command_past_its_time_is_stopped(ssh_rig: SshRig) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError) as raised:
        # It writes on: once ssh is stopped here the far side's next write ends it, so the test
        # leaves nothing running there (a silent `sleep` would outlive the connection).
        run_remote("gpu-b", ["sh", "-c", "while :; do echo x; sleep 0.2; done"],
                   ssh_rig.options, timeout=2)  # fmt: skip
    assert time.monotonic() - started < 10
    assert "gpu-b" in raised.value.message
    assert "2 s" in raised.value.message


def test_inventory_by_the_far_sides_llama_wizard(ssh_rig: SshRig, tmp_path: Path) -> None:
    answer = remote_inventory("gpu-a", ssh_rig.options, timeout=60)
    assert answer.method == "llama-wizard"
    assert answer.inventory.simulated == PROFILE
    assert answer.inventory.to_json() == expected_inventory(tmp_path)
    assert [g.gfx_target for g in answer.inventory.gpus] == ["gfx906", "gfx906"]


def test_inventory_by_the_probe(ssh_rig: SshRig, tmp_path: Path) -> None:
    answer = remote_inventory("gpu-b", ssh_rig.options, timeout=60)
    assert answer.method == "probe"
    assert answer.inventory.simulated == PROFILE
    assert answer.inventory.to_json() == expected_inventory(tmp_path)


def test_host_that_is_down(ssh_rig: SshRig) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError) as raised:
        remote_inventory("gpu-down", ssh_rig.options, timeout=20)
    assert time.monotonic() - started < 20
    assert "gpu-down" in raised.value.message
    assert "refused" in raised.value.message.lower()
    assert "BatchMode" in raised.value.fix


def test_unknown_host_key_is_refused_not_asked(ssh_rig: SshRig, tmp_path: Path) -> None:
    """BatchMode: a key that is not accepted fails at once with ssh's reason."""
    config = tmp_path / "ssh_config"
    port = ssh_rig.ports["gpu-b"]
    config.write_text(
        f"Host nokey\n    HostName 127.0.0.1\n    Port {port}\n    IdentitiesOnly yes\n"
        f"    IdentityFile {tmp_path / 'missing'}\n    StrictHostKeyChecking no\n"
        f"    UserKnownHostsFile {tmp_path / 'known'}\n"
    )
    with pytest.raises(RemoteError) as raised:
        remote_inventory("nokey", SshOptions(config=str(config)), timeout=20)
    assert "Permission denied" in raised.value.message
    assert "without a password" in raised.value.fix


def test_far_side_that_answers_garbage(ssh_rig: SshRig) -> None:
    with pytest.raises(RemoteError) as raised:
        remote_inventory("gpu-garbage", ssh_rig.options, timeout=30)
    assert "gpu-garbage" in raised.value.message
    assert "Welcome to gpu-garbage!" in raised.value.message


def test_far_side_simulating_an_unknown_profile(ssh_rig: SshRig) -> None:
    with pytest.raises(RemoteError) as raised:
        remote_inventory("gpu-unknown-profile", ssh_rig.options, timeout=60)
    assert "gpu-unknown-profile" in raised.value.message
    assert "no-such-profile" in raised.value.message


def test_far_side_without_python(ssh_rig: SshRig) -> None:
    with pytest.raises(RemoteError) as raised:
        remote_inventory("gpu-no-python", ssh_rig.options, timeout=30)
    assert "neither llama-wizard nor python3" in raised.value.message
    assert "python3" in raised.value.fix


def test_resolve_address(ssh_rig: SshRig) -> None:
    assert resolve_address("gpu-a", ssh_rig.options) == "127.0.0.1"
    bare = SshOptions(config=os.devnull)  # no Host * of the rig's config, nor the user's
    assert resolve_address("ssh://someone@127.0.0.1:2222", bare) == "127.0.0.1"
    assert resolve_address("localhost", bare) in ("127.0.0.1", "::1")
    with pytest.raises(RemoteError) as raised:
        resolve_address("no-such-host.invalid", bare)
    assert "does not resolve" in raised.value.message


def test_local_address_towards() -> None:
    assert local_address_towards("127.0.0.1") == "127.0.0.1"
    assert local_address_towards("127.0.0.2").startswith("127.")


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.9", True),
        ("172.31.255.1", True),
        ("172.32.0.1", False),
        ("192.168.1.20", True),
        ("169.254.3.4", True),
        ("100.64.0.1", True),
        ("100.127.255.254", True),
        ("100.128.0.1", False),
        ("8.8.8.8", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("fd12:3456::1", True),
        ("[fd12:3456::1]", True),
        ("2001:4860::8888", False),
        ("::ffff:192.168.0.1", True),
        ("gpu1.example.com", False),
    ],
)
def test_is_private_address(address: str, private: bool) -> None:
    assert is_private_address(address) is private


def test_measure_link(ssh_rig: SshRig) -> None:
    link = measure_link("gpu-b", ssh_rig.options, timeout=30, sample_bytes=4 << 20)
    assert 0 < link.rtt_ms < 1000
    assert link.bytes_per_second is not None and link.bytes_per_second > 0
    document = link.to_json()
    assert set(document) == {"rtt_ms", "bytes_per_second"}
    json.dumps(document)


def test_measure_link_to_a_host_that_is_down(ssh_rig: SshRig) -> None:
    with pytest.raises(RemoteError) as raised:
        measure_link("gpu-down", ssh_rig.options, timeout=20)
    assert "gpu-down" in raised.value.message


def test_slow_link_words() -> None:
    fast = LinkMeasure(rtt_ms=0.3, bytes_per_second=1.2e9)
    assert slow_link_words(fast) is None
    far = LinkMeasure(rtt_ms=12.0, bytes_per_second=1.2e9)
    words = slow_link_words(far, host="gpu2")
    assert words is not None and "gpu2" in words and "round trip" in words
    thin = LinkMeasure(rtt_ms=0.5, bytes_per_second=100e6)  # 0.8 Gbit/s
    share = 20 << 30
    assert load_seconds(thin, share) == pytest.approx(share / 100e6)
    words = slow_link_words(thin, host="gpu3", share_bytes=share)
    assert words is not None and "20.0 GiB" in words and f"{share / 100e6:.0f} s" in words
    assert load_seconds(LinkMeasure(rtt_ms=1.0, bytes_per_second=None), share) is None


def _bundle_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [SYSTEM_PYTHON if a == "python3" else a for a in probe_argv("python3")] + list(args),
        input=probe_bundle(),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_system_python_has_no_llama_wizard() -> None:
    """What the bundle tests rely on: the python they run it with cannot import ours."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", "import llama_wizard"], capture_output=True, check=False
    )
    assert done.returncode != 0


def test_probe_bundle_simulated(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"PATH": "/usr/bin:/bin", "LLAMA_WIZARD_SIMULATE": PROFILE, "TMPDIR": str(scratch)}
    done = _bundle_run(env)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == expected_inventory(tmp_path)
    # The unpacked bundle and the simulated machine are gone again.
    assert list(scratch.iterdir()) == []


def test_probe_bundle_on_this_machine() -> None:
    from llama_wizard.detect.inventory import detect

    done = _bundle_run({"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr.decode()
    document = json.loads(done.stdout)
    here = detect().to_json()
    assert "simulated" not in document
    assert document["cpu"] == here["cpu"]
    assert document["memory_total_bytes"] == here["memory_total_bytes"]
    assert [g["pci_bus_id"] for g in document["gpus"]] == [g["pci_bus_id"] for g in here["gpus"]]


def test_probe_bundle_unknown_profile() -> None:
    done = _bundle_run({"PATH": "/usr/bin:/bin", "LLAMA_WIZARD_SIMULATE": "no-such-profile"})
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"no-such-profile" in done.stderr


def test_simulate_environment_is_the_default_of_simulate() -> None:
    """LLAMA_WIZARD_SIMULATE stands in for --simulate (how a far side is simulated over SSH); an
    explicit --simulate wins."""
    env = dict(os.environ, LLAMA_WIZARD_SIMULATE=PROFILE)
    wizard = str(VENV_BIN / "llama-wizard")
    done = subprocess.run(
        [wizard, "detect", "--json"], capture_output=True, env=env, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["simulated"] == PROFILE
    other = subprocess.run(
        [wizard, "--simulate", "rtx4090", "detect", "--json"],
        capture_output=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert json.loads(other.stdout)["simulated"] == "rtx4090"


def test_measure_link_to_a_far_side_that_does_not_echo(ssh_rig: SshRig) -> None:
    with pytest.raises(RemoteError) as raised:
        measure_link("gpu-garbage", ssh_rig.options, timeout=20)
    assert "gpu-garbage" in raised.value.message
    assert "cat" in raised.value.fix


def test_probe_bundle_without_psutil_stops_a_gpu_tool_that_hangs(tmp_path: Path) -> None:
    """No psutil on the far side: a rocminfo that never answers is killed at the timeout (by
    its process group) and reported, and the probe still answers."""
    import psutil

    before = {p.pid for p in psutil.process_iter()}
    env = {"PATH": "/usr/bin:/bin", "LLAMA_WIZARD_SIMULATE": "rocminfo-hangs"}
    done = _bundle_run(env, "2")
    assert done.returncode == 0, done.stderr.decode()
    document = json.loads(done.stdout)
    assert any("rocminfo" in w["message"] for w in document["warnings"]), document["warnings"]
    left = [
        p for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before and "sleep" in " ".join(p.info["cmdline"] or [])
    ]  # fmt: skip
    assert left == []
