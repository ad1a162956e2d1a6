"""The bare `llama-wizard`: the full-screen Textual wizard, or its plain line-by-line face
(`--plain`, `--yes`, a dumb terminal, no terminal). Its options are the top-level parser's."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from llama_wizard.tui.cli.options import overrides_from, wants_plain

    overrides = overrides_from(args)
    if args.plain or args.yes or wants_plain():
        from llama_wizard.tui.plain import run_plain

        return run_plain(
            root=args.root,
            simulate=args.simulate,
            timeout=args.timeout,
            yes=args.yes,
            overrides=overrides,
        )
    from llama_wizard.tui.app import run_wizard

    return run_wizard(
        root=args.root, simulate=args.simulate, timeout=args.timeout, overrides=overrides
    )
