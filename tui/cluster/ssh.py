"""The cluster's servers over SSH: the system `ssh` (so ~/.ssh/config, agents and jump hosts work
as the person set them up), never prompting, always time-limited; detection on the far side;
the address the head reaches a server by.

Commands are argv lists here. ssh hands the remote command to the far side's login shell as one
string, so it is quoted once, with shlex.join, and every remote program runs under `sh -c`
(the login shell may be fish or csh: only the outer quoting meets it).
"""

from __future__ import annotations

import ipaddress
import json
import math
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from llama_wizard.detect.errors import ActionableError
from llama_wizard.detect.model import Inventory

SSH_FAILED = 255  # ssh's own status when it could not connect or authenticate
# The far side's answer to "which detector do you have": exits after saying so.
_NO_LLAMA_WIZARD = 90
_NO_PYTHON = 91
_MISSING_MARK = "llama-wizard-cluster:"
# 100.64.0.0/10 is carrier-grade NAT space, which is also where Tailscale puts its nodes: not
# the public internet, so an rpc-server may listen there.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")


class RemoteError(ActionableError):
    """A server that could not be reached, or whose answer cannot be used."""


@dataclass(frozen=True)
class SshOptions:
    config: str | None = None  # ssh -F FILE; None: ssh's own (~/.ssh/config)
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class RemoteResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class RemoteInventory:
    inventory: Inventory
    method: str  # "llama-wizard" (its own `detect --json` there) or "probe" (sent over)


def ssh_base(options: SshOptions, extra: Sequence[str] = ()) -> list[str]:
    """`ssh` and the options every connection of the wizard has, before the destination."""
    argv = ["ssh"]
    if options.config:
        argv += ["-F", options.config]
    argv += [
        # Never ask: a password or host-key prompt would hang a plan with no one to answer it.
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={max(1, math.ceil(options.connect_timeout))}",
        # A link that drops mid-build is noticed in 15 s instead of TCP's many minutes.
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=3",
    ]
    for option in extra:
        argv += ["-o", option]
    return argv


def ssh_argv(
    destination: str,
    remote_argv: Sequence[str],
    options: SshOptions,
    extra: Sequence[str] = (),
) -> list[str]:
    """The local argv that runs remote_argv on destination. `extra`: more `-o` options
    (`Compression=no`)."""
    return [*ssh_base(options, extra), destination, "--", shlex.join(list(remote_argv))]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(it printed nothing)"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "(nothing)"


def _connect_fix(destination: str, options: SshOptions) -> str:
    config = f"-F {options.config} " if options.config else ""
    return (
        f"Check that `ssh {config}{destination} true` works without a password or a question "
        "(the wizard runs ssh with BatchMode=yes): load your key into ssh-agent or name it with "
        "IdentityFile in ~/.ssh/config, and accept the host key once by hand."
    )


def run_remote(
    destination: str,
    remote_argv: Sequence[str],
    options: SshOptions,
    *,
    timeout: float,
    input: bytes | None = None,  # subprocess's own name for it
    extra: Sequence[str] = (),
) -> RemoteResult:
    """Run remote_argv on destination and wait for it: its own exit status and output.
    RemoteError when ssh itself fails (exit 255) or the whole run takes longer than `timeout`
    seconds (then ssh and everything it started here are stopped)."""
    from llama_wizard.detect.process import stop_process_tree

    argv = ssh_argv(destination, remote_argv, options, extra)
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as error:
        raise RemoteError(
            f"Cannot run ssh to reach {destination}: {error.strerror}.",
            "Install the OpenSSH client (Debian/Ubuntu: `apt install openssh-client`).",
        ) from error
    try:
        stdout, stderr = popen.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process_tree(popen, signals=(), group=True, reap_timeout=1.0)
        popen.communicate()
        raise RemoteError(
            f"{destination} did not answer within {timeout:g} s.",
            f"Check that the host is up and reachable (`ssh {destination} true`), or give it "
            "more time.",
        ) from None
    if popen.returncode == SSH_FAILED:
        said = _last_line(stderr.decode("utf-8", errors="replace"))
        raise RemoteError(
            f"ssh could not reach {destination}: {said}", _connect_fix(destination, options)
        )
    return RemoteResult(popen.returncode, stdout, stderr)


# Which detector the far side has. Exits with a status of its own when it has none of them,
# having said on stderr which are there.
_DETECT_SCRIPT = f"""\
if command -v llama-wizard >/dev/null 2>&1; then exec llama-wizard --timeout "$1" detect --json; fi
if command -v python3 >/dev/null 2>&1; then
    echo "{_MISSING_MARK} no llama-wizard" >&2; exit {_NO_LLAMA_WIZARD}
fi
echo "{_MISSING_MARK} neither llama-wizard nor python3" >&2; exit {_NO_PYTHON}
"""


def _tool_timeout(remaining: float) -> float:
    """Seconds each GPU tool may take on the far side: detection may run nvidia-smi up to six
    times (detect/inventory.py), so a seventh of what is left, at least one second."""
    return max(1.0, round(remaining / 7, 1))


def _parse_inventory(destination: str, result: RemoteResult, how: str) -> Inventory:
    text = result.text
    try:
        document = json.loads(text)
        return Inventory.from_json(document)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    if text.strip():
        said = f"the first line it sent: {_first_line(text)}"
    else:
        said = f"it said: {_last_line(result.error_text)}"
    raise RemoteError(
        f"{destination} did not answer with an inventory ({how}, exit status "
        f"{result.returncode}); {said}",
        f"Run `ssh {destination} {how}` to see what it prints there: its login shell may print "
        "text of its own (move it to an interactive-only file such as ~/.bashrc's interactive "
        "part), or detection failed there.",
    )


def remote_inventory(destination: str, options: SshOptions, *, timeout: float) -> RemoteInventory:
    """The far side's inventory: from its own `llama-wizard detect --json` when it has one, else
    from the probe sent over the connection and run with its python3. At most two connections,
    `timeout` seconds for both together."""
    from llama_wizard.tui.cluster.probe_bundle import probe_argv, probe_bundle

    deadline = time.monotonic() + timeout
    first = run_remote(
        destination,
        ["sh", "-c", _DETECT_SCRIPT, "llama-wizard-detect", f"{_tool_timeout(timeout):g}"],
        options,
        timeout=timeout,
    )
    if first.returncode == _NO_PYTHON and _MISSING_MARK in first.error_text:
        raise RemoteError(
            f"{destination} has neither llama-wizard nor python3, so it cannot be detected.",
            f"Install python3 (3.10 or newer) on {destination} (Debian/Ubuntu: `apt install "
            "python3`), or llama-wizard itself; nothing else is needed there.",
        )
    if not (first.returncode == _NO_LLAMA_WIZARD and _MISSING_MARK in first.error_text):
        return RemoteInventory(
            _parse_inventory(destination, first, "llama-wizard detect --json"), "llama-wizard"
        )
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RemoteError(
            f"{destination} did not answer within {timeout:g} s.",
            f"Check that the host is up and reachable (`ssh {destination} true`), or give it "
            "more time.",
        )
    second = run_remote(
        destination,
        probe_argv("python3", _tool_timeout(remaining)),
        options,
        timeout=remaining,
        input=probe_bundle(),
    )
    if second.returncode != 0 and not second.text.strip():
        raise RemoteError(
            f"The probe failed on {destination} (exit status {second.returncode}): "
            f"{_last_line(second.error_text)}",
            f"Install llama-wizard on {destination} (then its own `llama-wizard detect` runs "
            "there), or fix what the message says (python3 3.10 or newer is needed).",
        )
    return RemoteInventory(_parse_inventory(destination, second, "python3 probe"), "probe")


def ssh_config(destination: str, options: SshOptions) -> dict[str, str]:
    """What ssh itself makes of destination (`ssh -G`: ~/.ssh/config applied, lower-case keys,
    the first value of each)."""
    argv = ["ssh"]
    if options.config:
        argv += ["-F", options.config]
    argv += ["-G", destination]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RemoteError(
            f"Cannot ask ssh how it reaches {destination}: {error}.",
            "Install the OpenSSH client (Debian/Ubuntu: `apt install openssh-client`).",
        ) from error
    if done.returncode != 0:
        raise RemoteError(
            f"ssh cannot use {destination}: "
            f"{_last_line(done.stderr.decode('utf-8', errors='replace'))}",
            "Check the destination and your ssh configuration (`ssh -G DESTINATION`).",
        )
    config: dict[str, str] = {}
    for line in done.stdout.decode("utf-8", errors="replace").splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), value.strip())
    return config


def resolve_address(destination: str, options: SshOptions) -> str:
    """The IP address the head reaches destination by: ssh's HostName for it, resolved here
    (IPv4 first: rpc-server and `--rpc` lists are simplest with it)."""
    hostname = ssh_config(destination, options).get("hostname") or destination
    try:
        infos = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise RemoteError(
            f"{hostname} (the host name of {destination}) does not resolve: {error}.",
            "Check the name (`ssh -G` shows what ssh uses), or give the address itself.",
        ) from error
    addresses = [info[4][0] for info in infos if info[0] == socket.AF_INET]
    addresses += [str(info[4][0]).split("%")[0] for info in infos if info[0] == socket.AF_INET6]
    if not addresses:
        raise RemoteError(
            f"{hostname} (the host name of {destination}) has no IP address.",
            "Check the name (`ssh -G` shows what ssh uses), or give the address itself.",
        )
    return str(addresses[0])


def is_private_address(address: str) -> bool:
    """Whether an rpc-server may listen on address: loopback, RFC 1918, link-local, IPv6 ULA, or
    100.64.0.0/10 (CGNAT, Tailscale). Not the unspecified address (every interface) and nothing
    public: llama.cpp's RPC has no authentication."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified or ip.is_multicast:
        return False
    if ip.is_loopback or ip.is_link_local:
        return True
    if isinstance(ip, ipaddress.IPv4Address):
        return ip in _SHARED_ADDRESS_SPACE or any(
            ip in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
        )
    return ip in _ULA


def local_address_towards(address: str) -> str:
    """This machine's address on its route to `address` (connecting a UDP socket picks the
    route and sends nothing)."""
    plain = address.strip("[]")
    family = socket.AF_INET6 if ":" in plain else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((plain, 9))  # discard port; no packet leaves
            return str(probe.getsockname()[0])
    except OSError as error:
        raise RemoteError(
            f"This machine has no route to {address}: {error.strerror or error}.",
            "Check the network between the hosts (`ip route get ADDRESS`).",
        ) from error
