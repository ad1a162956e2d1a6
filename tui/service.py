"""Keeping llama-server running after the SSH session ends: a systemd unit on a non-NixOS Linux
host (`llama-wizard service`, the Done step's "Keep the server running").

The unit runs the same llama-server as the Done step's "Serve" command (tui/commands.server_spec:
the plan's flags, environment and model, on the chosen host and port) with the hardening the
flake's NixOS module uses (shared/reference/flake.md, "NixOS Modules"):

- root: a system unit (/etc/systemd/system) with DynamicUser=yes, ProtectSystem=strict,
  ProtectHome (a model or binary under /root or /home is bound in read-only), PrivateTmp,
  NoNewPrivileges, and the GPU's devices only (DeviceAllow=, SupplementaryGroups=render video);
- anyone else: a user unit (~/.config/systemd/user) with lingering enabled
  (`loginctl enable-linger`), so it runs with no session open; the same sandbox, minus what a
  user's service manager cannot do (another user, device rules).

The API key of a server others can reach (tui/apikey.py) is never in the unit: systemd hands the
0600 key file to the service (LoadCredential=) and llama-server reads it from there
(LLAMA_ARG_API_KEY_FILE, its --api-key-file).

On NixOS the module does all this: the faces show the `services.llama-server` snippet instead
(tui/commands.nixos_command). Without a running systemd (containers, WSL) nothing is written.

No Textual, no printing: `on_progress` callbacks and ServiceError (message + fix)."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError

if TYPE_CHECKING:
    from llama_wizard.tui.launch import LaunchSpec
    from llama_wizard.tui.plan import Plan

UNIT_PREFIX = "llama-wizard-server"
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(): systemd is PID 1 here
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
CREDENTIAL = "llama-server-api-key"
URL_MARK = "# llama-wizard-url: "  # read back by `service status`
HEALTH_TIMEOUT = 300.0  # model loading (and an -hf download) can take minutes
JOURNAL_LINES = 30
HOME_ROOTS = ("/home", "/root", "/run/user")
# Variables that say where llama.cpp and huggingface_hub keep models: passed on when set, so the
# service finds the same cache (they are no secrets; HF_TOKEN is, and is never written).
CACHE_VARIABLES = ("LLAMA_CACHE", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE")


class ServiceError(ActionableError):
    """A service cannot be written, started or asked about."""


class NoSystemd(ServiceError):
    """systemd is not running on this machine (a container, WSL without systemd)."""


# --- systemd's quoting -----------------------------------------------------------------------

_SPECIAL = set(" \t\n\r\"'\\;")


def _escape(word: str, *, dollar: bool) -> str:
    out = []
    for char in word:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "%":
            out.append("%%")  # a specifier otherwise (%h, %n, ...)
        elif char == "$" and dollar:
            out.append("$$")  # an environment variable reference otherwise
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def systemd_word(word: str, *, dollar: bool = True) -> str:
    """One argument as systemd reads it back on an ExecStart= line (systemd.service, "Command
    lines"): `%` doubled (specifiers), `$` doubled (variable references; dollar=False for
    Environment=, which expands none), and double quotes with C escapes around any word with
    white space, quotes, backslashes, a lone `;` or control characters. Not shlex: systemd
    knows no `'\\''`."""
    escaped = _escape(word, dollar=dollar)
    if word and not (_SPECIAL & set(word)) and all(ord(c) >= 0x20 for c in word):
        return escaped
    return f'"{escaped}"'


def exec_line(argv: Sequence[str]) -> str:
    """An ExecStart= value: argv[0] must be an absolute path (no prefix characters)."""
    if not argv or not argv[0].startswith("/"):
        raise ValueError(f"ExecStart needs an absolute path first, not {argv[:1]!r}")
    return " ".join(systemd_word(word) for word in argv)


def environment_line(name: str, value: str) -> str:
    return "Environment=" + systemd_word(f"{name}={value}", dollar=False)


# --- where the unit lives --------------------------------------------------------------------


@dataclass(frozen=True)
class UnitLocation:
    """A unit's name and file, and how systemctl and journalctl reach it (system or user)."""

    name: str
    path: Path
    scope: str  # "system" or "user"
    user: str

    @property
    def user_scope(self) -> bool:
        return self.scope == "user"

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.user_scope else []), *args]

    def journalctl(self, lines: int = JOURNAL_LINES, follow: bool = False) -> list[str]:
        scope = ["--user"] if self.user_scope else []
        return ["journalctl", *scope, "-u", self.name, "-n", str(lines), "--no-pager",
                *(["-f"] if follow else [])]  # fmt: skip

    def show_command(self) -> list[str]:
        return self.systemctl("show", "-p", "ActiveState,SubState,ExecMainPID,Result", self.name)

    def install_commands(self) -> list[list[str]]:
        linger = [["loginctl", "enable-linger", self.user]] if self.user_scope else []
        return [
            *linger,
            self.systemctl("daemon-reload"),
            self.systemctl("enable", "--now", self.name),
        ]

    def stop_commands(self) -> list[list[str]]:
        return [self.systemctl("stop", self.name)]

    def uninstall_commands(self) -> list[list[str]]:
        return [self.systemctl("disable", "--now", self.name), self.systemctl("daemon-reload")]


def unit_location(
    port: int,
    *,
    euid: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> UnitLocation:
    """The unit for llama-server on `port`: a system unit for root, else a user unit."""
    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    name = f"{UNIT_PREFIX}-{port}.service"
    user = _user_name(euid, environ)
    if euid == 0:
        return UnitLocation(name, SYSTEM_UNIT_DIR / name, "system", user)
    config = environ.get("XDG_CONFIG_HOME") or str(_home(euid, environ) / ".config")
    return UnitLocation(name, Path(config) / "systemd" / "user" / name, "user", user)


def _user_name(euid: int, environ: Mapping[str, str]) -> str:
    try:
        return pwd.getpwuid(euid).pw_name
    except KeyError:
        return environ.get("USER") or str(euid)


def _home(euid: int, environ: Mapping[str, str]) -> Path:
    if environ.get("HOME"):
        return Path(environ["HOME"])
    try:
        return Path(pwd.getpwuid(euid).pw_dir)
    except KeyError:
        return Path("~").expanduser()


# --- the unit --------------------------------------------------------------------------------


@dataclass
class ServiceUnit:
    """What `service install` writes and runs (its dry run shows exactly this)."""

    location: UnitLocation
    text: str
    url: str
    health_url: str
    api_key_file: Path | None
    argv: list[str]
    notes: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)  # made by install: the caches

    @property
    def commands(self) -> list[list[str]]:
        return self.location.install_commands()

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "unit": self.location.name,
            "unit_path": str(self.location.path),
            "scope": self.location.scope,
            "unit_text": self.text,
            "commands": self.commands,
            "url": self.url,
            "health_url": self.health_url,
            "notes": self.notes,
        }
        if self.api_key_file is not None:
            document["api_key_file"] = str(self.api_key_file)
        return document

    def shown_commands(self) -> list[str]:
        return [shlex.join(argv) for argv in self.commands]


def _under_home(path: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in HOME_ROOTS)


def _model_paths(args: Sequence[str]) -> tuple[str | None, str | None]:
    """(-m PATH, -hf/-mu source) of llama-server's arguments."""
    local = remote = None
    for position, arg in enumerate(args[:-1]):
        if arg in ("-m", "--model"):
            local = args[position + 1]
        elif arg in ("-hf", "-hfr", "--hf-repo", "-mu", "--model-url"):
            remote = args[position + 1]
    return local, remote


def _readable_by_service(path: Path) -> bool:
    """Whether another user (the service's dynamic user) may read the file."""
    try:
        return bool(path.stat().st_mode & 0o004) and bool(path.parent.stat().st_mode & 0o001)
    except OSError:
        return False


def service_unit(
    plan: Plan,
    spec: LaunchSpec,
    host: str,
    port: int,
    *,
    euid: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServiceUnit:
    """The unit for llama-server of `spec` (any program of the plan: its server variant) on
    host:port. Raises ServiceError when it cannot be written (a secret on the command line)."""
    from llama_wizard.tui.apikey import API_KEY_VARIABLE, api_key_path
    from llama_wizard.tui.commands import server_spec
    from llama_wizard.tui.launch import is_secret_name, server_url, uses_gpu, without_secrets

    environ = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    location = unit_location(port, euid=euid, environ=environ)
    system = location.scope == "system"
    server = server_spec(spec, host, port)
    if without_secrets(server.args) != server.args:
        raise ServiceError(
            "The server's command line holds a secret (--api-key, --hf-token): it would be "
            "written into the unit, which every user can read.",
            "Leave it out: on an address other machines reach, the wizard gives llama-server "
            "its own key from a file only you read.",
        )
    binary = os.path.realpath(server.binary)  # ./result may go; the store path is what runs
    argv = [binary, *server.args]
    notes: list[str] = []
    service_lines: list[str] = []
    binds: list[str] = []
    writable: list[str] = []

    # The model: a local file is read-only to the service; -hf/-mu download into a cache.
    local, remote = _model_paths(server.args)
    if local is not None:
        model = Path(local).expanduser().absolute()
        if not model.exists():
            notes.append(f"The model file {model} does not exist (yet): the service will fail "
                         "until it does.")  # fmt: skip
        for directory in dict.fromkeys(
            [str(model.parent), str(Path(os.path.realpath(model)).parent)]
        ):
            if system and _under_home(directory):
                binds.append(directory)
        if system and model.exists() and not _readable_by_service(Path(os.path.realpath(model))):
            notes.append(
                f"The service's own user cannot read {model}: make it readable (`chmod o+r`, "
                "and o+x on its directory) or copy it to /var/lib/llama-models/."
            )
    if remote is not None:
        notes.append(
            f"The model comes from {remote} (-hf): the service needs the network at start and "
            "a cache it may write; it downloads the file there unless it is already cached. "
            "A gated repo needs HF_TOKEN, which the wizard never writes into a unit: download "
            "it first (`llama-wizard pull`) so the service runs from the local file."
        )
    if binary.startswith("/") and system and _under_home(binary):
        binds.append(str(Path(binary).parent.parent))  # the build's bin/ and lib/

    env = {k: v for k, v in server.env.items() if not is_secret_name(k)}
    for name in CACHE_VARIABLES:
        if name in environ and name not in env:
            env[name] = environ[name]
    if remote is not None:
        if system:
            # A dynamic user has no home: the cache is systemd's, kept across restarts.
            cache = f"/var/cache/{location.name.removesuffix('.service')}"
            service_lines.append(f"CacheDirectory={location.name.removesuffix('.service')}")
            env.setdefault("LLAMA_CACHE", cache)
            env.setdefault("HF_HOME", f"{cache}/huggingface")
        else:
            home = _home(euid, environ)
            for name, default in (("LLAMA_CACHE", home / ".cache" / "llama.cpp"),
                                  ("HF_HOME", home / ".cache" / "huggingface")):  # fmt: skip
                writable.append(str(Path(env.get(name) or default)))

    api_key_file = None
    key_lines: list[str] = []
    if API_KEY_VARIABLE in server.env:
        api_key_file = api_key_path()
        key_lines = [
            "# The API key is never written here: llama-server reads it from the key file (0600;",
            "# clients send `Authorization: Bearer KEY` with the key in that file).",
        ]
        if system:
            # systemd (root) reads the file and hands it to the dynamic user.
            key_lines += [
                f"LoadCredential={CREDENTIAL}:{systemd_word(str(api_key_file), dollar=False)}",
                f"Environment=LLAMA_ARG_API_KEY_FILE=%d/{CREDENTIAL}",
            ]
        else:  # the user's own service reads the user's own file
            key_lines.append(environment_line("LLAMA_ARG_API_KEY_FILE", str(api_key_file)))

    url = server_url(host, port)
    lines = [
        "# Written by llama-wizard (`llama-wizard service install`); "
        "`llama-wizard service uninstall` removes it.",
        f"{URL_MARK}{url}",
        "[Unit]",
        f"Description=llama-server (llama-wizard) on {host}:{port}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_line(argv)}",
        *[environment_line(k, v) for k, v in env.items()],
        *key_lines,
        "Restart=on-failure",
        "RestartSec=5",
        "# The sandbox of the flake's NixOS module (services.llama-server).",
    ]
    if system:
        lines += ["DynamicUser=yes", "SupplementaryGroups=render video"]
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        # tmpfs: an empty /home and /root, into which the model's folder is bound read-only.
        f"ProtectHome={'tmpfs' if binds else ('yes' if system else 'read-only')}",
        *[f"BindReadOnlyPaths={systemd_word(path, dollar=False)}" for path in dict.fromkeys(binds)],
        *[f"ReadWritePaths=-{systemd_word(path, dollar=False)}" for path in writable],
        "PrivateTmp=yes",
        *service_lines,
    ]
    if system:
        lines += [
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictSUIDSGID=yes",
            *_device_lines(plan, uses_gpu(plan)),
        ]
    lines += [
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ]
    if not system and uses_gpu(plan):
        notes.append(
            "A user service uses the GPUs with your own groups: you must be in `render` and "
            "`video` (`sudo usermod -aG render,video $USER`)."
        )
    health = server_url("127.0.0.1" if host in ("0.0.0.0", "::", "") else host, port) + "health"
    return ServiceUnit(
        location, "\n".join(lines), url, health, api_key_file, argv, notes, directories=writable
    )


def _device_lines(plan: Plan, gpu: bool) -> list[str]:
    """Only the GPU's device nodes (with the standard pseudo-devices DeviceAllow= implies)."""
    if not gpu:
        return ["PrivateDevices=yes"]
    backend = plan.build.backend
    if backend == "cuda":
        return ["DeviceAllow=char-nvidia* rw", "DeviceAllow=char-drm rw"]
    if backend == "rocm":
        return ["DeviceAllow=/dev/kfd rw", "DeviceAllow=char-drm rw"]
    return ["DeviceAllow=char-drm rw", "DeviceAllow=char-nvidia* rw"]  # Vulkan: any vendor


def read_url(location: UnitLocation) -> str | None:
    """The URL an installed unit serves on (the mark the wizard writes into it)."""
    try:
        text = location.path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(URL_MARK):
            return line.removeprefix(URL_MARK).strip()
    return None


# --- where a service can run -----------------------------------------------------------------


def systemd_running(marker: Path = SYSTEMD_RUNNING) -> bool:
    return marker.is_dir()


def check_systemd(marker: Path = SYSTEMD_RUNNING) -> None:
    """Raises NoSystemd (with what to do instead) when systemd is not this machine's init."""
    if not systemd_running(marker):
        raise NoSystemd(
            f"systemd is not running on this machine (there is no {marker}): a container, or "
            "WSL without systemd, cannot keep a service running.",
            "Run `llama-wizard run --server` inside tmux or screen (it then outlives the SSH "
            "session), or start the container with a restart policy (`docker run --restart "
            "unless-stopped ...`); on WSL, set `systemd=true` under [boot] in /etc/wsl.conf.",
        )


def nixos_apply_commands() -> list[list[str]]:
    """How the snippet takes effect, with the configuration's flake in /etc/nixos (its
    nixosConfigurations.HOSTNAME, the name the snippet gives it)."""
    return [["sudo", "nixos-rebuild", "switch", "--flake", "/etc/nixos"]]


# --- running systemctl -----------------------------------------------------------------------

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} is not installed.", "Install systemd.") from None
    except subprocess.TimeoutExpired:
        raise ServiceError(f"`{shlex.join(argv)}` did not answer in 60 s.",
                           "Check `systemctl status`.") from None  # fmt: skip


def _checked(argv: list[str], run: Runner) -> subprocess.CompletedProcess[str]:
    result = run(argv)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip()
        fix = "Run it yourself to see more."
        if "--user" in argv and ("bus" in said.lower() or "XDG_RUNTIME_DIR" in said):
            fix = ("Your user's service manager is not reachable: log in over SSH (not `su`), "
                   "or `sudo machinectl shell $USER@`, then try again.")  # fmt: skip
        raise ServiceError(f"`{shlex.join(argv)}` failed: {said or 'no output'}", fix)
    return result


@dataclass
class ServiceStatus:
    unit: str
    active_state: str
    sub_state: str
    pid: int | None
    url: str | None
    log_lines: list[str]

    @property
    def running(self) -> bool:
        return self.active_state == "active"

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "active_state": self.active_state, "sub_state": self.sub_state,
                "pid": self.pid, "url": self.url, "log": self.log_lines}  # fmt: skip

    def summary(self) -> str:
        where = f" at {self.url}" if self.url else ""
        pid = f" (pid {self.pid})" if self.pid else ""
        return f"{self.unit}: {self.active_state}/{self.sub_state}{pid}{where}"


def _journal(location: UnitLocation, run: Runner, lines: int = JOURNAL_LINES) -> list[str]:
    result = run(location.journalctl(lines))
    return (result.stdout or result.stderr).strip().splitlines()


def status(location: UnitLocation, run: Runner = _run) -> ServiceStatus:
    check_systemd()
    result = _checked(location.show_command(), run)
    props = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    pid = int(props.get("ExecMainPID", "0") or 0) or None
    return ServiceStatus(location.name, props.get("ActiveState", "unknown"),
                         props.get("SubState", "unknown"), pid, read_url(location),
                         _journal(location, run))  # fmt: skip


def install(
    unit: ServiceUnit,
    on_progress: Callable[[str], None] = lambda _text: None,
    *,
    timeout: float = HEALTH_TIMEOUT,
    run: Runner = _run,
) -> ServiceStatus:
    """Write the unit, enable and start it, and wait until /health answers 200. Raises
    NoSystemd, or ServiceError with the journal's last lines when it does not come up."""
    check_systemd()
    location = unit.location
    if not Path(unit.argv[0]).is_file():
        raise ServiceError(f"{unit.argv[0]} does not exist.", "Build it first: llama-wizard build")
    try:
        for directory in unit.directories:
            Path(directory).mkdir(parents=True, exist_ok=True)
        location.path.parent.mkdir(parents=True, exist_ok=True)
        location.path.write_text(unit.text, encoding="utf-8")
        location.path.chmod(0o644)
    except OSError as error:
        raise ServiceError(
            f"{location.path} cannot be written: {error.strerror or error}.",
            "Run as root for a system unit, or as yourself for a user unit.",
        ) from None
    on_progress(f"wrote {location.path}")
    for argv in unit.commands:
        on_progress(f"$ {shlex.join(argv)}")
        _checked(argv, run)
    started = time.monotonic()
    last = ""
    while True:
        elapsed = time.monotonic() - started
        code = _health(unit.health_url)
        if code == 200:
            on_progress(f"{unit.health_url} answered 200 after {elapsed:.0f} s")
            return status(location, run)
        state = status(location, run)
        if state.active_state == "failed" or state.sub_state == "auto-restart":
            raise _did_not_start(unit, f"it {state.active_state} ({state.sub_state})", run)
        if elapsed > timeout:
            raise _did_not_start(
                unit, f"{unit.health_url} did not answer 200 in {timeout:.0f} s", run
            )
        said = "loading the model (503)" if code == 503 else "not answering yet"
        where = f"{state.active_state}/{state.sub_state}"
        text = f"waiting for {unit.health_url}: {said}, {elapsed:.0f} s ({where})"
        if text != last:
            on_progress(text)
            last = text
        time.sleep(1.0)


def _did_not_start(unit: ServiceUnit, why: str, run: Runner) -> ServiceError:
    location = unit.location
    log = "\n".join(_journal(location, run))
    return ServiceError(
        f"{location.name} did not come up: {why}. The last lines of its log "
        f"(`{shlex.join(location.journalctl())}`):\n{log}",
        "The log says why (a model it cannot read, memory it cannot get). Fix that and run "
        "`llama-wizard service install` again, or remove it: `llama-wizard service uninstall`.",
    )


def _health(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # our own URL
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def stop(location: UnitLocation, run: Runner = _run) -> None:
    check_systemd()
    for argv in location.stop_commands():
        _checked(argv, run)


def uninstall(location: UnitLocation, run: Runner = _run) -> list[list[str]]:
    """Disable and stop it, remove the file, reload: the commands it ran."""
    check_systemd()
    ran = []
    if location.path.exists():
        argv = location.systemctl("disable", "--now", location.name)
        _checked(argv, run)
        ran.append(argv)
        location.path.unlink()
    reload = location.systemctl("daemon-reload")
    _checked(reload, run)
    return [*ran, reload]
