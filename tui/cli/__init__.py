"""The `llama-wizard` command line: the parser, the wizard's own options, and dispatch to the
subcommands (one module each: detect, plan, build, run, fit). The bare command starts the Textual
wizard (wizard.py).

Startup matters here (`llama-wizard detect --json` in scripts, `--help`): this module imports
only argparse and the option helpers, a command line that names a subcommand builds only that
subcommand's parser, and each subcommand module imports what it runs on only when it runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from llama_wizard.tui import __version__
from llama_wizard.tui.cli.options import (
    add_estimate_options,
    add_machine_options,
    context_size,
    gpu_list,
    quant_name,
)

EXIT_USAGE = 2
# Each names a module of this package with `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS = ("detect", "plan", "build", "run", "fit", "bench", "service", "pull", "cluster")
# Top-level options that take a value: the word after one is that value, never a command.
_VALUE_OPTIONS = (
    "--root",
    "--simulate",
    "--timeout",
    "--flake",
    "--gpu",
    "--model",
    "--quant",
    "--ctx",
)


def command_module(name: str) -> ModuleType:
    """The module of subcommand `name` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{name}")


def build_parser(with_commands: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; without `with_commands`, only the wizard's own options (the
    bare `llama-wizard` parses faster, so its first screen comes up sooner); with `only`, just
    that one subcommand (a command line that names it parses the same either way)."""
    parser = argparse.ArgumentParser(
        prog="llama-wizard",
        description=(
            "From a GPU server to llama.cpp running on it: detect the GPUs, pick the llama.cpp "
            "Nix flake build, a model and quant that fit, build it and launch it. "
            "Without a command, starts the full-screen wizard."
        ),
        epilog="Environment: LLAMA_WIZARD_SIMULATE=PROFILE is the default of --simulate (how "
        "`cluster` simulates a server over SSH); LLAMA_WIZARD_ROOT the default of --root.",
    )
    parser.add_argument("--version", action="version", version=f"llama-wizard {__version__}")
    add_machine_options(parser, top_level=True)
    add_wizard_options(parser)
    if not with_commands:
        parser.set_defaults(command=None)
        return parser
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        subparser = command_module(name).add_parser(commands)
        add_machine_options(subparser, top_level=False)
    return parser


def add_wizard_options(parser: argparse.ArgumentParser) -> None:
    """Options of the wizard itself (no subcommand): how it asks, and what it starts from."""
    group = parser.add_argument_group("wizard")
    group.add_argument(
        "--plain",
        action="store_true",
        help="line-by-line prompts instead of the full-screen wizard (chosen by itself when "
        "TERM=dumb or there is no terminal)",
    )
    group.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="take every default (saved choice, else recommendation) without asking: plan, "
        "build, launch llama-completion, print the commands; needs no input",
    )
    group.add_argument(
        "--reset", action="store_true", help="forget the choices saved by earlier runs first"
    )
    group.add_argument("--flake", metavar="REF", help="the llama.cpp flake (as for `plan`)")
    group.add_argument(
        "--gpu", metavar="N[,N]", type=gpu_list, help="use these GPUs (as for `plan`)"
    )
    group.add_argument("--model", metavar="MODEL", help="start from this model (as for `plan`)")
    group.add_argument(
        "--quant", type=quant_name, metavar="Q", help="start from this quant (as for `plan`)"
    )
    group.add_argument(
        "--ctx", type=context_size, metavar="N", help="start from this context size (256 or more)"
    )
    add_estimate_options(group)


def parser_scope(arguments: Sequence[str]) -> tuple[bool, str | None]:
    """Which parser a command line needs: (whether it needs the subcommands at all, the one
    subcommand it names). Options only: the wizard's parser. A known subcommand's name: that
    subcommand alone. A request for help, `--`, or any other word: the whole parser, so help
    and errors (an unknown command, say) read as they always did."""
    value_next = False
    for word in arguments:
        if value_next:
            value_next = False
            continue
        if word in ("-h", "--help", "--"):
            return True, None
        if word.startswith("-"):
            # `--opt VALUE`, abbreviated as argparse allows (`--sim 2x-mi50`); not `--opt=VALUE`.
            value_next = (
                word.startswith("--")
                and "=" not in word
                and any(option.startswith(word) for option in _VALUE_OPTIONS)
            )
            continue
        return True, word if word in COMMANDS else None
    return False, None


def _list_profiles() -> int:
    from llama_wizard.detect.simulate import profile_listing

    print(profile_listing())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    with_commands, only = parser_scope(arguments)
    parser = build_parser(with_commands=with_commands, only=only)
    args = parser.parse_args(arguments)
    if args.simulate is None and args.root is None:
        # How a server is simulated on the far side of SSH (sshd's AcceptEnv), where no option
        # can be added to the command line that runs there. An explicit --root wins.
        args.simulate = os.environ.get("LLAMA_WIZARD_SIMULATE") or None
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    from llama_wizard.detect.errors import ProfileError

    try:
        if args.simulate == "list":
            return _list_profiles()
        if args.reset:
            from llama_wizard.tui.settings import reset_settings, settings_path

            backup = reset_settings()
            what = f"kept as {backup}" if backup else "there were none"
            print(f"Forgot the saved choices ({settings_path()}; {what}).", file=sys.stderr)
        if args.command:
            return command_module(args.command).run(args)
        from llama_wizard.tui.cli import wizard

        return wizard.run(args)
    except ProfileError as error:
        from llama_wizard.tui.cli.options import print_error

        print_error(error)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`llama-wizard detect --json | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
