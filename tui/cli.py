"""The `llama-wizard` command line. Subcommands call detect/, nix/ and models/ and print; the bare
command starts the Textual wizard. Heavy imports wait until a command needs them, so `--help`
and scripted subcommands start fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from llama_wizard.tui import __version__
from llama_wizard.tui.options import add_machine_options, gpu_list

EXIT_USAGE = 2


def build_parser(with_commands: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without `with_commands`, only the wizard's own options (the
    bare `llama-wizard` parses faster, so its first screen comes up sooner)."""
    parser = argparse.ArgumentParser(
        prog="llama-wizard",
        description=(
            "From a GPU server to llama.cpp running on it: detect the GPUs, pick the llama.cpp "
            "Nix flake build, a model and quant that fit, build it and launch it. "
            "Without a command, starts the full-screen wizard."
        ),
    )
    parser.add_argument("--version", action="version", version=f"llama-wizard {__version__}")
    add_machine_options(parser, top_level=True)
    add_wizard_options(parser)
    if not with_commands:
        parser.set_defaults(command=None)
        return parser
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    detect = commands.add_parser(
        "detect",
        help="list the GPUs, CPU and RAM, with warnings and fixes",
        description="Detect GPUs (sysfs/udev, KFD, rocminfo, nvidia-smi), CPU and RAM.",
    )
    detect.add_argument("--json", action="store_true", help="print one JSON document")
    add_machine_options(detect, top_level=False)
    plan = commands.add_parser(
        "plan",
        help="the recommended flake output and runtime environment, with reasons",
        description="Recommend the llama.cpp flake output and environment for these GPUs.",
    )
    plan.add_argument("--json", action="store_true", help="print one JSON document")
    plan.add_argument(
        "--flake",
        metavar="REF",
        help="the llama.cpp flake (default: this directory if it holds one, else "
        "github:ggml-org/llama.cpp)",
    )
    plan.add_argument("--output", metavar="NAME", help="build this flake output instead")
    plan.add_argument(
        "--model", metavar="MODEL", help="plan for this model (GGUF path, URL or repo[:quant])"
    )
    plan.add_argument("--quant", metavar="Q", help="plan for this quant (e.g. Q4_K_M)")
    plan.add_argument("--ctx", type=int, metavar="N", help="plan for this context size")
    plan.add_argument(
        "--gpu", metavar="N[,N]", type=gpu_list, help="use these GPUs (indices from `detect`)"
    )
    add_machine_options(plan, top_level=False)
    from llama_wizard.tui import build_cli

    build = build_cli.add_parser(commands)
    add_machine_options(build, top_level=False)
    from llama_wizard.tui import run_cli

    run = run_cli.add_parser(commands)
    add_machine_options(run, top_level=False)
    from llama_wizard.tui import fit as fit_command

    fit = fit_command.add_parser(commands)
    add_machine_options(fit, top_level=False)
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
    group.add_argument("--quant", metavar="Q", help="start from this quant (as for `plan`)")
    group.add_argument("--ctx", type=int, metavar="N", help="start from this context size")


def _list_profiles() -> int:
    from llama_wizard.detect.simulate import list_profiles

    print("\n".join(list_profiles()))
    return 0


def _run_detect(args: argparse.Namespace) -> int:
    from llama_wizard.tui.machine import open_machine

    with open_machine(args.root, args.simulate) as machine:
        inventory = machine.detect(args.timeout)
    if args.json:
        json.dump(inventory.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from llama_wizard.tui.render import print_inventory

        print_inventory(inventory)
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    from llama_wizard.models.errors import ModelError
    from llama_wizard.nix.errors import NixError
    from llama_wizard.nix.recommend import ChoiceError
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.plan import make_plan

    with open_machine(args.root, args.simulate) as machine:
        inventory = machine.detect(args.timeout)
        try:
            plan = make_plan(
                machine,
                inventory,
                flake_ref=args.flake,
                output=args.output,
                gpu_indices=args.gpu,
                model=args.model,
                quant=args.quant,
                ctx=args.ctx,
            )
        except (NixError, ChoiceError, ModelError) as error:
            print(f"llama-wizard: {error.message}\n{error.fix}", file=sys.stderr)
            return 1
    if args.json:
        json.dump(plan.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from llama_wizard.tui.render import print_plan

        print_plan(plan)
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llama_wizard.nix.errors import NixError
    from llama_wizard.nix.recommend import ChoiceError
    from llama_wizard.tui.build_cli import run_build
    from llama_wizard.tui.machine import open_machine
    from llama_wizard.tui.plan import make_plan, state_dir

    gpus = gpu_list(args.gpu) if args.gpu else None
    with open_machine(args.root, args.simulate) as machine:
        inventory = machine.detect(args.timeout)
        try:
            plan = make_plan(
                machine, inventory, flake_ref=args.flake, output=args.output, gpu_indices=gpus
            )
        except (NixError, ChoiceError) as error:
            print(f"llama-wizard: {error.message}\n{error.fix}", file=sys.stderr)
            return 1
        if plan.nix is None:
            warning = next(w for w in plan.warnings if w.code == "nix_missing")
            print(f"llama-wizard: {warning.message}\n{warning.fix}", file=sys.stderr)
            return 1
        for cost in plan.build.costs:
            print(f"note: {cost}", file=sys.stderr)
        if args.json:
            mode = "json"
        elif sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
            mode = "rich"
        else:
            mode = "plain"
        name = Path(plan.build.out_link).name.removeprefix("result-")
        return run_build(
            plan.build.build_argv,
            name,
            state_dir(),
            out_link=plan.build.out_link,
            mode=mode,
            detach=args.detach,
            env=machine.env,
        )


def _run_wizard(args: argparse.Namespace) -> int:
    from llama_wizard.tui.options import wants_plain

    if args.plain or args.yes or wants_plain():
        from llama_wizard.tui.plain import run_plain

        return run_plain(
            root=args.root,
            simulate=args.simulate,
            timeout=args.timeout,
            yes=args.yes,
            flake=args.flake,
            gpus=args.gpu,
            model=args.model,
            quant=args.quant,
            ctx=args.ctx,
        )
    from llama_wizard.tui.app import run_wizard

    return run_wizard(
        root=args.root,
        simulate=args.simulate,
        timeout=args.timeout,
        overrides={
            "flake": args.flake,
            "gpus": args.gpu,
            "model": args.model,
            "quant": args.quant,
            "ctx": args.ctx,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # A word that is not an option (a command, or a typo of one) or a request for help needs the
    # full parser; the bare wizard with options only does not.
    options_only = all(a.startswith("-") and a not in ("-h", "--help") for a in arguments)
    parser = build_parser(with_commands=not options_only)
    args = parser.parse_args(arguments)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    if args.simulate == "list":
        return _list_profiles()
    if args.reset:
        from llama_wizard.tui.settings import reset_settings, settings_path

        backup = reset_settings()
        what = f"kept as {backup}" if backup else "there were none"
        print(f"Forgot the saved choices ({settings_path()}; {what}).", file=sys.stderr)
    from llama_wizard.detect.errors import ProfileError

    try:
        if args.command == "detect":
            return _run_detect(args)
        if args.command == "plan":
            return _run_plan(args)
        if args.command == "build":
            return _run_build(args)
        if args.command == "run":
            from llama_wizard.tui import run_cli

            return run_cli.run(args)
        if args.command == "fit":
            from llama_wizard.tui import fit as fit_command

            return fit_command.run(args)
        return _run_wizard(args)
    except ProfileError as error:
        print(f"llama-wizard: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`llama-wizard detect --json | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
