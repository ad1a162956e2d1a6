"""A real OpenSSH server on 127.0.0.1 for the cluster's SSH tests: Debian's /usr/sbin/sshd run as
the current user with its own host key, a test client key, and a client config whose aliases
are the "servers" (all this machine, each simulating a bundled profile on its far side):

- `gpu-a`: llama-wizard on its remote PATH (the repo's .venv/bin), LLAMA_WIZARD_SIMULATE=2x-mi50
- `gpu-b`: no llama-wizard there (the probe is sent over), LLAMA_WIZARD_SIMULATE=2x-mi50
- `gpu-garbage`: the far side answers every command with text that is no inventory
- `gpu-unknown-profile`: like gpu-a, simulating a profile that does not exist
- `gpu-no-python`: a remote PATH with `sh` and `cat` only
- `gpu-down`: a port where nothing listens

Every alias sends NIX_CONFIG (the tests' Nix settings: root without a daemon), so a build over
SSH runs as the tests configure Nix here.

One sshd listens on one port per kind of far side (sshd_config `Match LocalPort`), so the PATH
and the forced command differ per alias. Test modules import the fixture:

    from tests.sshd import fixture_ssh_rig  # noqa: F401
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llama_wizard.detect.process import stop_process_tree
from llama_wizard.tui.cluster.ssh import SshOptions

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
PROFILE = "2x-mi50"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without its privilege separation dir
START_SECONDS = 10.0
GARBAGE = "Welcome to gpu-garbage! This line is no inventory."


@dataclass(frozen=True)
class SshRig:
    options: SshOptions  # ssh -F with the aliases above
    config: Path  # the client config
    log: Path  # sshd's own log (-e), for a failing test's message
    ports: dict[str, int]  # alias -> port
    user: str

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (the sockets stay open until all are chosen, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", "llama-wizard-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _require_tools() -> None:
    missing = [tool for tool in ("ssh", "ssh-keygen") if shutil.which(tool) is None]
    if not Path(SSHD).exists():
        missing.append(SSHD)
    if missing:
        pytest.fail(
            f"The SSH tests need OpenSSH ({', '.join(missing)} missing). Install it with "
            "`apt-get install openssh-server openssh-client` (scripts/test does this).",
            pytrace=False,
        )
    # Only sshd started as root drops privileges into it; one run as another user does not.
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as error:
            pytest.fail(
                f"sshd needs {PRIVSEP_DIR} (its privilege separation directory) and it cannot be "
                f"made: {error}. Create it as root: `mkdir -p {PRIVSEP_DIR}`.",
                pytrace=False,
            )


@pytest.fixture(scope="session", name="ssh_rig")
def fixture_ssh_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshRig]:
    _require_tools()
    base = tmp_path_factory.mktemp("sshd")
    user = pwd.getpwuid(os.getuid()).pw_name
    host_key, client_key = base / "host_ed25519", base / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = base / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    # A remote PATH with a shell and cat but no python3 (nor llama-wizard). Set by a forced
    # command, after the login shell's rc files: root's ~/.bashrc may put pyenv's shims first.
    bare_bin = base / "bare-bin"
    bare_bin.mkdir()
    for tool in ("sh", "cat"):
        (bare_bin / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    names = ("gpu-a", "gpu-b", "gpu-garbage", "gpu-no-python", "gpu-down")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    listen = [n for n in names if n != "gpu-down"]
    system_path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    sshd_config = base / "sshd_config"
    sshd_config.write_text(
        "".join(f"Port {ports[n]}\n" for n in listen)
        + f"""ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {base / "sshd.pid"}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AcceptEnv LLAMA_WIZARD_* NIX_CONFIG
LogLevel VERBOSE
Match LocalPort {ports["gpu-a"]}
    SetEnv PATH={VENV_BIN}:{system_path}
Match LocalPort {ports["gpu-b"]}
    SetEnv PATH={system_path}
Match LocalPort {ports["gpu-no-python"]}
    ForceCommand export PATH={bare_bin}; exec {bare_bin}/sh -c "$SSH_ORIGINAL_COMMAND"
Match LocalPort {ports["gpu-garbage"]}
    ForceCommand echo '{GARBAGE}'
"""
    )
    known_hosts = base / "known_hosts"
    client_config = base / "ssh_config"
    client_config.write_text(
        "".join(f"Host {alias}\n    Port {ports[alias]}\n" for alias in names if alias != "gpu-a")
        + f"""Host gpu-a gpu-unknown-profile
    Port {ports["gpu-a"]}
Host gpu-unknown-profile
    SetEnv LLAMA_WIZARD_SIMULATE=no-such-profile
Host *
    HostName 127.0.0.1
    User {user}
    IdentityFile {client_key}
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile {known_hosts}
    LogLevel ERROR
    SetEnv LLAMA_WIZARD_SIMULATE={PROFILE}
    SendEnv NIX_CONFIG
"""
    )
    log = base / "sshd.log"
    with log.open("wb") as log_file:
        sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(sshd_config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    rig = SshRig(SshOptions(config=str(client_config)), client_config, log, ports, user)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not all(_listening(ports[n]) for n in listen):
            if sshd.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"sshd did not start (exit status {sshd.poll()}); its log:\n{rig.log_text()}",
                    pytrace=False,
                )
            time.sleep(0.05)
        yield rig
    finally:
        stop_process_tree(sshd, signals=(15,), grace=5.0, group=True)
