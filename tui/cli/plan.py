"""`llama-wizard plan`: the recommended flake output and runtime environment, with reasons,
and the model/quant table and commands."""

from __future__ import annotations

import argparse
import json
import sys

from llama_wizard.tui.cli.options import (
    add_estimate_options,
    add_nix_setup_option,
    context_size,
    gpu_list,
    quant_name,
)
from llama_wizard.tui.cli.verified import VERIFY_HELP


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `plan` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "plan",
        help="the recommended flake output and runtime environment, with reasons",
        description="Recommend the llama.cpp flake output and environment for these GPUs.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--flake",
        metavar="REF",
        help="the llama.cpp flake (default: this directory if it holds one, else "
        "github:ggml-org/llama.cpp)",
    )
    parser.add_argument("--output", metavar="NAME", help="build this flake output instead")
    parser.add_argument(
        "--model", metavar="MODEL", help="plan for this model (GGUF path, URL or repo[:quant])"
    )
    parser.add_argument(
        "--quant", type=quant_name, metavar="Q", help="plan for this quant (e.g. Q4_K_M)"
    )
    parser.add_argument(
        "--ctx", type=context_size, metavar="N", help="plan for this context size (256 or more)"
    )
    parser.add_argument(
        "--gpu", metavar="N[,N]", type=gpu_list, help="use these GPUs (indices from `detect`)"
    )
    add_estimate_options(parser)
    add_nix_setup_option(parser)
    parser.add_argument(
        "--verify",
        action="store_true",
        help=VERIFY_HELP + " (the output must be built: llama-wizard build)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui.cli.options import command_session

    with command_session(args) as session:
        try:
            plan = session.make_plan()
        except ActionableError as error:
            from llama_wizard.tui.cli.options import print_error

            print_error(error.message, error.fix)
            return 1
        # The model's speed in its mode: measured on this machine when it was, else predicted.
        speed = session.choice_speed(plan.model) if plan.model is not None else None
        verified = None
        if args.verify:
            # llama.cpp's own fit, after the estimate (never fatal: a VerifyError is shown).
            from llama_wizard.tui.cli.verified import Verified

            verified = Verified.ask(session.verify)
    if args.json:
        document = plan.to_json()
        if document["model"] is not None:
            document["model"]["speed"] = None if speed is None else speed.to_json()
        document["verify"] = None if verified is None else verified.to_json()
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from llama_wizard.tui.render import print_plan

        print_plan(plan)
        from llama_wizard.tui.ranking import speed_words

        words = speed_words(speed)
        if words and plan.model is not None and plan.model.verdict != "no":
            print(f"Speed of {plan.model.name} {plan.model.quant}: {words}.")
        if verified is not None:
            from llama_wizard.tui.cli.verified import print_verified

            print_verified(verified)
    return 0
