"""`llama-wizard service install|status|logs|stop|uninstall`: keep llama-server running as a
systemd unit (tui/service.py); on NixOS, the `services.llama-server` snippet instead.

Only argparse and the option helpers are imported at module level (see tui/cli/__init__.py)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from llama_wizard.tui.cli.options import (
    context_size,
    gpu_list,
    host_address,
    print_error,
    quant_name,
    tcp_port,
)

if TYPE_CHECKING:
    from llama_wizard.tui.service import ServiceUnit

EXIT_ERROR, EXIT_USAGE = 1, 2
ACTIONS = ("install", "status", "logs", "stop", "uninstall")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "service",
        help="keep llama-server running as a systemd service (install, status, logs, stop, "
        "uninstall)",
        description=(
            "Keep llama-server running after you log out: `install` writes a systemd unit for "
            "the plan's llama-server (a user unit with lingering, or a system unit as root), "
            "starts it and waits until it answers; `status`, `logs [-f]`, `stop` and "
            "`uninstall` act on it. On NixOS it prints the services.llama-server snippet "
            "instead. --dry-run shows the unit and the commands without running anything."
        ),
    )
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--dry-run", action="store_true", help="show the unit and the commands; run nothing"
    )
    parser.add_argument("-f", "--follow", action="store_true", help="logs: follow the log")
    parser.add_argument(
        "--wait", type=float, default=300.0, metavar="S",
        help="install: seconds to wait for /health to answer 200 (default 300)",
    )  # fmt: skip
    parser.add_argument(
        "--host", type=host_address, default="127.0.0.1", metavar="H",
        help="llama-server's address (default 127.0.0.1; any other gets an API key)",
    )  # fmt: skip
    parser.add_argument(
        "--port", type=tcp_port, default=8080, metavar="P", help="llama-server's port (8080)"
    )
    unset = argparse.SUPPRESS
    parser.add_argument("--model", default=unset, metavar="M", help="serve this model")
    parser.add_argument("--quant", default=unset, type=quant_name, metavar="Q", help="this quant")
    parser.add_argument(
        "--ctx", default=unset, type=context_size, metavar="N", help="context size in tokens"
    )
    parser.add_argument("--flake", default=unset, metavar="REF", help="the llama.cpp flake")
    parser.add_argument("--output", metavar="NAME", help="serve this flake output's build")
    parser.add_argument(
        "--gpu", default=unset, metavar="N[,N]", type=gpu_list, help="use these GPUs"
    )
    return parser


def _say(text: str) -> None:
    from llama_wizard.tui.format import plain_text

    print(plain_text(text), file=sys.stderr, flush=True)


def _fail(error: Any, json_mode: bool) -> int:
    if json_mode:
        print(json.dumps({"error": error.message, "fix": error.fix}))
    print_error(error.message, error.fix)
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui import service

    if args.simulate and not args.dry_run and args.action == "install":
        print_error(
            "--simulate describes hardware that is not here: a service for it is shown, never "
            "installed.",
            "Add --dry-run to see the unit, or leave out --simulate.",
        )
        return EXIT_USAGE
    try:
        if args.action == "install":
            return _install(args)
        location = service.unit_location(args.port)
        commands = {
            "status": [location.show_command(), location.journalctl()],
            "logs": [location.journalctl(follow=args.follow)],
            "stop": location.stop_commands(),
            "uninstall": location.uninstall_commands(),
        }[args.action]
        if args.dry_run:
            document = {"unit": location.name, "unit_path": str(location.path),
                        "scope": location.scope, "commands": commands}  # fmt: skip
            if args.json:
                print(json.dumps(document, indent=2))
            else:
                for argv in commands:
                    print(shlex.join(argv))
            return 0
        service.check_systemd()
        if args.action == "logs":
            argv = commands[0]
            _say(f"$ {shlex.join(argv)}")
            try:
                return subprocess.call(argv)
            except KeyboardInterrupt:
                return 0
        if args.action == "status":
            state = service.status(location)
            if args.json:
                print(json.dumps(state.to_json(), indent=2))
            else:
                print(state.summary())
                for line in state.log_lines:
                    print(f"  {line}")
            return 0 if state.running else 3  # systemctl is-active's "not running"
        if args.action == "stop":
            for argv in commands:
                _say(f"$ {shlex.join(argv)}")
            service.stop(location)
        else:
            ran = service.uninstall(location)
            for argv in ran:
                _say(f"$ {shlex.join(argv)}")
        if args.json:
            print(json.dumps({"unit": location.name, "action": args.action, "ok": True}))
        return 0
    except ActionableError as error:
        return _fail(error, args.json)


def _install(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui import service
    from llama_wizard.tui.cli.options import command_session

    with command_session(args) as session:
        try:
            session.detect()
            session.make_plan()
            session.set_launch(host=args.host, port=args.port)
            if session.is_nixos():
                return _nixos(session, args)
            unit = session.service_unit(check_built=not args.dry_run)
        except ActionableError as error:
            return _fail(error, args.json)
    if args.dry_run:
        if args.json:
            print(json.dumps(unit.to_json(), indent=2))
        else:
            _show(unit)
        return 0
    try:
        service.check_systemd()
        _show(unit, text=False)
        state = service.install(unit, _say, timeout=args.wait)
    except ActionableError as error:
        return _fail(error, args.json)
    if args.json:
        print(json.dumps({**unit.to_json(), "status": state.to_json()}, indent=2))
    else:
        print(state.summary())
        print(f"llama-server stays up at {unit.url}; `llama-wizard service status --port "
              f"{args.port}` and `... logs -f` follow it.")  # fmt: skip
    return 0


def _show(unit: ServiceUnit, *, text: bool = True) -> None:
    """The unit and its commands, for a person (stdout for the dry run, else stderr)."""
    write = print if text else _say
    write(f"# {unit.location.path} ({unit.location.scope} unit)")
    if text:
        print(unit.text)
    for note in unit.notes:
        _say(f"note: {note}")
    if unit.api_key_file is not None:
        _say(f"note: clients need the API key in {unit.api_key_file} (never written into the unit)")
    for line in unit.shown_commands():
        write(line if text else f"$ {line}")
    write(f"url: {unit.url}")


def _nixos(session: Any, args: argparse.Namespace) -> int:
    from llama_wizard.tui import service

    snippet = session.nixos_service()
    if snippet is None:
        print_error(
            "This is NixOS, where a service is configured, not installed; but this flake has no "
            "NixOS module (nixosModules.default) to configure it with.",
            "Use a flake that exports `nixosModules.default` with a `services.llama-server` "
            "option, or write a systemd.services entry yourself with `llama-wizard run "
            "--server`'s command.",
        )
        return EXIT_ERROR
    apply = service.nixos_apply_commands()
    if args.json:
        print(json.dumps({"nixos": True, "snippet": snippet.text, "commands": apply,
                          "url": session.server_url()}, indent=2))  # fmt: skip
        return 0
    print(snippet.text)
    _say(
        "This is NixOS: the flake's module runs llama-server as a service. Add the above to "
        "your configuration's flake (/etc/nixos/flake.nix), then apply it:"
    )
    for argv in apply:
        _say(f"  {shlex.join(argv)}")
    return 0
