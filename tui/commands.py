"""What the Done step shows: the commands to do it all again by hand, each copyable, and all of
them savable to one file.

- the build, exactly as the wizard ran it;
- the run (`LaunchSpec.shell_command()`), and the llama-server variant on the chosen host and
  port (127.0.0.1:8080 unless the person chose another);
- a NixOS `services.llama-server` snippet, with only the options the flake's module has
  (shared/reference/flake.md, "NixOS Modules");
- for ROCm builds, the matching `docker-rocm*` image: build, load, run;
- `nix develop` for the backend's dev shell.

Every command listens where the person chose, never on every interface unasked. On an address
other machines can reach, llama-server requires an API key (tui/apikey.py): the commands say
where the key file is and refer to `$LLAMA_API_KEY`, whose value is never written out.

Nothing here runs anything, and no secret (HF_TOKEN, API keys) is ever written out.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from llama_wizard.detect.errors import ActionableError
from llama_wizard.nix.flake import nix_string
from llama_wizard.tui.apikey import (
    API_KEY_VARIABLE,
    LOOPBACK_NAMES,
    ensure_api_key,
    export_line,
    key_note,
    needs_api_key,
)
from llama_wizard.tui.launch import (
    LaunchSpec,
    is_secret_name,
    shell_words,
    uses_gpu,
    without_secrets,
)

if TYPE_CHECKING:
    from llama_wizard.tui.plan import Plan

SERVER_HOST = "127.0.0.1"  # the default of `run --host`, the Launch step and the NixOS module
SERVER_PORT = 8080
CONTAINER_HOST = "0.0.0.0"  # inside a container: see docker_command
NIXOS_KEY_FILE = "/run/secrets/llama-server-api-key"
DOCKER_IMAGE = "llama-cpp-rocm:latest"  # flake.md, "Docker Images"
NIXOS_MODEL_DIR = "/var/lib/llama-models"
FLAKE_INPUT = "llama-cpp"
# Options whose values become NixOS module options (or belong to llama-completion only).
_VALUE_OPTIONS = {"-hf", "-m", "-mu", "-c", "-ngl", "--host", "--port", "-p", "-n"}
_COMPLETION_ONLY = {"-p", "-n", "-no-cnv"}
_NIX_KEYWORDS = {"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"}
_NIX_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*$")


class CommandsFileExists(ActionableError):
    """save_commands would overwrite a file the caller did not ask to overwrite."""


@dataclass(frozen=True)
class Command:
    title: str
    text: str
    language: str  # "sh" or "nix"


# --- Nix literals ----------------------------------------------------------------------------


nix_str = nix_string  # one definition of a Nix string literal, in nix/flake.py


def nix_attr(name: str) -> str:
    """An attribute name: bare when Nix allows it, else quoted."""
    if _NIX_IDENTIFIER.match(name) and name not in _NIX_KEYWORDS:
        return name
    return nix_str(name)


def nix_list(items: Iterable[str]) -> str:
    values = [nix_str(i) for i in items]
    return "[ " + " ".join(values) + " ]" if values else "[ ]"


# --- the pieces of a launch ------------------------------------------------------------------


@dataclass
class _Launch:
    """A launch's arguments taken apart: the model, context, GPU layers, and the rest."""

    model_option: str | None  # -hf, -m or -mu
    model: str | None
    ctx: int | None
    gpu_layers: int | None
    rest: list[str]  # everything else, in order (without host/port and completion options)


def _take_apart(args: Sequence[str]) -> _Launch:
    launch = _Launch(None, None, None, None, [])
    position = 0
    while position < len(args):
        arg = args[position]
        if arg in _VALUE_OPTIONS and position + 1 < len(args):
            value = args[position + 1]
            if arg in ("-hf", "-m", "-mu"):
                launch.model_option, launch.model = arg, value
            elif arg == "-c":
                launch.ctx = int(value) if value.isdigit() else None
            elif arg == "-ngl":
                launch.gpu_layers = int(value) if value.isdigit() else None
            position += 2
            continue
        if arg not in _COMPLETION_ONLY:
            launch.rest.append(arg)
        position += 1
    return launch


def listen_address(spec: LaunchSpec) -> tuple[str, int]:
    """Where a launch's llama-server listens: its --host and --port, else the defaults."""
    host, port = SERVER_HOST, SERVER_PORT
    args = spec.args
    for position, arg in enumerate(args[:-1]):
        if arg == "--host":
            host = args[position + 1]
        elif arg == "--port" and args[position + 1].isdigit():
            port = int(args[position + 1])
    return host, port


def server_spec(spec: LaunchSpec, host: str = SERVER_HOST, port: int = SERVER_PORT) -> LaunchSpec:
    """The llama-server variant of a launch: the same model, flags and environment, listening on
    host:port instead of completing a prompt; with the API key (in its environment) when host
    is reachable from other machines."""
    args = _server_args(spec, host, port)
    binary = str(PurePosixPath(spec.binary).parent / "llama-server")
    env = dict(spec.env)
    if needs_api_key(host, args):
        env[API_KEY_VARIABLE] = ensure_api_key()
    else:
        env.pop(API_KEY_VARIABLE, None)  # ours, for another host: a loopback server needs none
    return LaunchSpec("llama-server", binary, args, env, list(spec.unset_env))


def _server_args(spec: LaunchSpec, host: str, port: int) -> list[str]:
    """A launch's arguments without its prompt, listening on host:port."""
    kept: list[str] = []
    skip = False
    for arg in spec.args:
        if skip:
            skip = False
        elif arg in ("-p", "-n", "--host", "--port"):
            skip = True
        elif arg != "-no-cnv":
            kept.append(arg)
    return [*kept, "--host", host, "--port", str(port)]


def _key_lines(spec: LaunchSpec) -> list[str]:
    """For a llama-server that requires the wizard's key: why (as comments), and the line that
    puts the key in $LLAMA_API_KEY, which the command refers to."""
    if API_KEY_VARIABLE not in spec.env:
        return []
    host, _port = listen_address(spec)
    return [*_comment(key_note(host)), export_line()]


def _comment(text: str, width: int = 78) -> list[str]:
    """A message as comment lines of a shell script or Nix file (`code` spans in quotes)."""
    import textwrap

    from llama_wizard.tui.format import plain_text

    return textwrap.wrap(plain_text(text), width - 2, initial_indent="# ", subsequent_indent="# ",
                         break_on_hyphens=False, break_long_words=False)  # fmt: skip


def _nix(plan: Plan, *args: str) -> list[str]:
    return plan.nix.nix_argv(*args) if plan.nix is not None else ["nix", *args]


# --- the commands ----------------------------------------------------------------------------


def build_command(plan: Plan) -> Command:
    return Command(f"Build ({plan.build.output})", shlex.join(plan.build.build_argv), "sh")


def run_command(spec: LaunchSpec) -> Command:
    text = "\n".join([*_key_lines(spec), spec.shell_command()])
    return Command(f"Run {spec.program}", text, "sh")


def server_command(spec: LaunchSpec, host: str = SERVER_HOST, port: int = SERVER_PORT) -> Command:
    server = server_spec(spec, host, port)
    text = "\n".join([*_key_lines(server), server.shell_command()])
    return Command(f"Serve with llama-server on {_host_port(host, port)}", text, "sh")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _nixos_model(plan: Plan, launch: _Launch) -> tuple[str, list[str]]:
    """The module's `model` (a local GGUF path) and the comment lines that explain it."""
    if launch.model_option == "-m" and launch.model:
        path = str(Path(launch.model).absolute())
        notes = []
        if path.startswith(("/home/", "/root/")):
            notes += [
                "The service runs as a dynamic user that cannot read home directories:",
                f"copy the file to {NIXOS_MODEL_DIR}/ and point `model` there.",
            ]
        return path, notes
    files = plan.model.files if plan.model is not None else []
    name = PurePosixPath(files[0].split("?", 1)[0]).name if files else "model.gguf"
    path = f"{NIXOS_MODEL_DIR}/{name}"
    if launch.model_option == "-mu":
        how = [
            f"The module takes a local GGUF file: download {launch.model}",
            f"(and any other -0000N-of-0000M parts) to {NIXOS_MODEL_DIR}/.",
        ]
    else:
        how = [
            "The module takes a local GGUF file, not -hf: the run command above",
            f"downloads {launch.model}",
            "to ~/.cache/llama.cpp/ ($LLAMA_CACHE; `llama-wizard fit --local` lists it);",
            f"copy the file (and any -0000N-of-0000M parts) to {NIXOS_MODEL_DIR}/.",
        ]
    return path, how


def _nixos_package(plan: Plan) -> str:
    build = plan.build
    package = f"inputs.{FLAKE_INPUT}.packages.{build.system}.{nix_attr(build.output)}"
    if build.rocm_targets is not None:
        targets = nix_str(";".join(build.rocm_targets))
        package = f"{package}.override {{ rocmGpuTargets = {targets}; }}"
    return package


def nixos_command(
    plan: Plan, spec: LaunchSpec, host: str = SERVER_HOST, port: int = SERVER_PORT
) -> Command | None:
    """A flake-based NixOS configuration running llama-server as the module's systemd service.
    None when the flake has no `nixosModules.default`."""
    if "default" not in plan.flake_outputs.nixos_modules:
        return None
    build = plan.build
    server = server_spec(spec, host, port)
    launch = _take_apart(server.args)
    model, notes = _nixos_model(plan, launch)
    env = {k: v for k, v in spec.env.items() if not is_secret_name(k)}
    gpu_layers = launch.gpu_layers if launch.gpu_layers is not None else 0
    fitted = "--fit" in launch.rest
    if launch.gpu_layers is None and uses_gpu(plan):
        gpu_layers = -1 if fitted else 99
    service = [
        "enable = true;",
        f"package = {_nixos_package(plan)};",
        *[f"# {line}" for line in notes],
        f"model = {nix_str(model)};",
        f"host = {nix_str(host)};",
        f"port = {port};",
    ]
    if fitted and gpu_layers == -1:
        # The module always passes --n-gpu-layers (default 99), which would stop llama.cpp's
        # own fit; -1 is llama.cpp's "auto".
        service.append("# -1: auto, so that llama.cpp's --fit places the layers (a tight fit)")
    service.append(f"gpuLayers = {gpu_layers};")
    if launch.ctx is not None:
        service.append(f"contextSize = {launch.ctx};")
    service.append(f"extraArgs = {nix_list(without_secrets(launch.rest))};")
    if API_KEY_VARIABLE in server.env:
        # Not commented out: a service reachable from the network must not start without a
        # key (a missing file stops it instead).
        service += [
            *_comment(
                f"It listens on {host}, which other machines can reach, so it requires an API "
                "key: put one (a long random string) in this file, readable only by root "
                "(agenix or sops-nix can provide it). Clients send `Authorization: Bearer KEY`."
            ),
            f"apiKeyFile = {nix_str(NIXOS_KEY_FILE)};",
        ]
    elif without_secrets(launch.rest) != launch.rest:
        service += [
            "# The API key is not written here: keep it in a file only root reads, and",
            f"# apiKeyFile = {nix_str(NIXOS_KEY_FILE)};",
        ]
    if env:
        service.append("environment = {")
        service += [f"  {nix_attr(k)} = {nix_str(v)};" for k, v in env.items()]
        service.append("};")
    body = "\n".join(" " * 12 + line if line else "" for line in service)
    text = f"""# flake.nix of your NixOS configuration: llama-server as a systemd service
{{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  inputs.{FLAKE_INPUT}.url = {nix_str(build.flake)};

  outputs = inputs@{{ nixpkgs, {FLAKE_INPUT}, ... }}: {{
    nixosConfigurations.{nix_attr(_hostname(plan))} = nixpkgs.lib.nixosSystem {{
      system = {nix_str(build.system)};
      modules = [
        ./configuration.nix
        inputs.{FLAKE_INPUT}.nixosModules.default
        {{
          services.llama-server = {{
{body}
          }};
        }}
      ];
    }};
  }};
}}
"""
    return Command("NixOS service (services.llama-server)", text, "nix")


def _hostname(plan: Plan) -> str:
    """This machine's name (what `nixos-rebuild --flake .` looks for); a placeholder when the
    hardware is simulated."""
    if plan.inventory.simulated:
        return "myhost"
    name = os.uname().nodename.split(".", 1)[0]
    return name if name and _NIX_IDENTIFIER.match(name) else "myhost"


def docker_output(plan: Plan) -> str | None:
    """The flake's docker-rocm* image for this build: the per-gfx one when there is exactly one
    target and the flake has it, else the all-architectures `docker-rocm`; None for non-ROCm
    builds or a flake without images."""
    build = plan.build
    if build.backend != "rocm":
        return None
    packages = set(plan.flake_outputs.packages)
    if build.rocm_targets is not None:
        targets = build.rocm_targets
    elif build.output.startswith("rocm-"):
        targets = [build.output.removeprefix("rocm-")]
    else:
        targets = []
    if len(targets) == 1 and f"docker-rocm-{targets[0]}" in packages:
        return f"docker-rocm-{targets[0]}"
    return "docker-rocm" if "docker-rocm" in packages else None


def docker_command(
    plan: Plan, spec: LaunchSpec, host: str = SERVER_HOST, port: int = SERVER_PORT
) -> Command | None:
    """Build and load the flake's image, and run llama-server in it with the GPUs.

    Inside the container llama-server listens on 0.0.0.0: the published port arrives on the
    container's own network interface, never on its loopback, so 127.0.0.1 there would answer
    nobody. Who can reach it from outside is decided by the published port, bound to the chosen
    host (`-p 127.0.0.1:8080:8080` answers only this machine). Other containers on the same
    Docker network reach the container's port directly; on a reachable host the key guards it."""
    output = docker_output(plan)
    if output is None:
        return None
    server = server_spec(spec, host, port)
    args = _server_args(spec, CONTAINER_HOST, port)
    mounts: list[str] = []
    if "-m" in args:  # a local file: mount its folder read-only
        position = args.index("-m") + 1
        local = Path(args[position]).absolute()
        mounts = ["-v", f"{local.parent}:/models:ro"]
        args[position] = f"/models/{local.name}"
    env = [a for k, v in server.env.items() if not is_secret_name(k) for a in ("-e", f"{k}={v}")]
    # Secrets pass by name: docker takes the value from the environment `docker run` runs in.
    env += [a for name in server.secret_variables() for a in ("-e", name)]
    run = [
        "docker", "run",
        "--device=/dev/kfd", "--device=/dev/dri",
        "--group-add", "video", "--group-add", "render",
        "-p", f"{_publish_address(host)}:{port}:{port}",
        *env, *mounts,
        DOCKER_IMAGE,
    ]  # fmt: skip
    lines = [
        shlex.join(_nix(plan, "build", f"{plan.build.flake}#{output}")),
        "docker load < ./result",
        *_key_lines(server),
        f"{shlex.join(run)} {shell_words(['llama-server', *args])}",
    ]
    if API_KEY_VARIABLE in server.env:
        # `-e NAME` passes the value from the shell without writing it on docker's command
        # line; an unset variable would start the server open, so the shell stops first.
        lines.insert(-1, f': "${{{API_KEY_VARIABLE}:?}}"')
    return Command(f"Docker ({output})", "\n".join(lines), "sh")


def _publish_address(host: str) -> str:
    """The host side of `docker run -p`: an IP address (Docker takes no names), IPv6 in []."""
    if host.lower() in LOOPBACK_NAMES:
        return "127.0.0.1"
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def dev_shell(plan: Plan) -> str | None:
    """The flake's dev shell for the build's backend (rocm, cuda), else `default`."""
    shells = plan.flake_outputs.dev_shells
    wanted = {"rocm": "rocm", "cuda": "cuda", "vulkan": "vulkan"}.get(plan.build.backend)
    for shell in (wanted, "default"):
        if shell and shell in shells:
            return shell
    return None


def dev_shell_command(plan: Plan) -> Command | None:
    shell = dev_shell(plan)
    if shell is None:
        return None
    argv = _nix(plan, "develop", f"{plan.build.flake}#{shell}")
    return Command(f"Development shell ({shell})", shlex.join(argv), "sh")


def commands_for(
    plan: Plan, spec: LaunchSpec, *, host: str | None = None, port: int | None = None
) -> list[Command]:
    """Every command of the Done step, in the order it shows them (those that do not apply to
    this plan and flake are left out). llama-server listens on host:port (the person's choice;
    without one, where `spec` does if it is llama-server, else 127.0.0.1:8080)."""
    spec_host, spec_port = listen_address(spec)
    host = host if host is not None else spec_host
    port = port if port is not None else spec_port
    commands = [build_command(plan), run_command(spec)]
    server = server_spec(spec, host, port)
    if spec.shell_command() != server.shell_command():  # not already this very server
        commands.append(server_command(spec, host, port))
    optional = [
        nixos_command(plan, spec, host, port),
        docker_command(plan, spec, host, port),
        dev_shell_command(plan),
    ]
    commands += [command for command in optional if command is not None]
    return commands


# --- saving ----------------------------------------------------------------------------------


def render_commands(commands: Sequence[Command]) -> str:
    """All commands as one shell-script-style text: each under a comment with its title; Nix
    snippets commented out, so the file stays valid shell (it is a record, not a script to run
    top to bottom)."""
    out = [
        "# llama-wizard: the commands to do it again by hand.",
        "# Not meant to run top to bottom: copy the one you need. Secrets (HF_TOKEN, API keys)",
        "# are not written here; set them in your shell.",
    ]
    for command in commands:
        out += ["", f"# --- {command.title}"]
        lines = command.text.rstrip("\n").split("\n")
        if command.language == "sh":
            out += lines
        else:
            out.append(f"# ({command.language}; remove the leading '# ')")
            out += [f"# {line}" if line else "#" for line in lines]
    return "\n".join(out) + "\n"


def save_commands(
    commands: Sequence[Command], path: str | Path, *, overwrite: bool = False
) -> Path:
    """Write the commands to `path`. Raises CommandsFileExists when the file exists and
    overwrite is False (nothing is written then), ActionableError when it cannot be written."""
    target = Path(path).expanduser()
    text = render_commands(commands)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        descriptor = os.open(target, flags, 0o644)
    except FileExistsError:
        raise CommandsFileExists(
            f"{target} already exists.", "Choose another file name, or allow overwriting it."
        ) from None
    except OSError as error:
        raise ActionableError(
            f"{target} cannot be written: {error.strerror}.",
            "Choose a file in a directory you can write to.",
        ) from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return target
