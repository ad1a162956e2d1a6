"""`llama-wizard detect`: the GPUs, CPU and RAM, with warnings and fixes.

`detect --json` is what scripts call, so this module imports nothing beyond argparse, json and
sys until it runs, and Rich only for the table."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `detect` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "detect",
        help="list the GPUs, CPU and RAM, with warnings and fixes",
        description="Detect GPUs (sysfs/udev, KFD, rocminfo, nvidia-smi), CPU and RAM.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def run(args: argparse.Namespace) -> int:
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
