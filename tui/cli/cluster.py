"""`llama-wizard cluster plan|build|up|status|down HOST...`: one model across several servers
with llama.cpp's RPC backend (tui/cluster/). The first HOST is the head (llama-server); the
others run rpc-server.

Only argparse and the option helpers are imported at module level (see tui/cli/__init__.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from llama_wizard.tui.cli.options import (
    add_memory_option,
    context_size,
    flash_attn_mode,
    host_address,
    print_error,
    quant_name,
    server_slots,
    tcp_port,
)

if TYPE_CHECKING:
    from llama_wizard.tui.cluster.plan import ClusterPlan, ClusterRequest
    from llama_wizard.tui.cluster.ssh import SshOptions

EXIT_ERROR = 1
ACTIONS = ("plan", "build", "up", "status", "down")
NEEDS_HOSTS = ("plan", "build", "up")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "cluster",
        help="one model across several servers with llama.cpp's RPC backend (plan, build, up, "
        "status, down)",
        description=(
            "Plan, build and start one model across several GPU servers: the first HOST is the "
            "head and runs llama-server with --rpc; every other HOST runs rpc-server with its "
            "GPUs (or its CPU). A HOST is `local`, `sim:PROFILE` (a bundled hardware profile, "
            "simulated: plan only) or an SSH destination (user@host, an alias from "
            "~/.ssh/config, ssh://user@host:port). llama.cpp's RPC has no authentication: "
            "rpc-servers are bound to private addresses only."
        ),
    )
    parser.add_argument("action", choices=ACTIONS, help="what to do")
    parser.add_argument(
        "hosts", nargs="*", metavar="HOST", help="the servers; the first is the head"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--flake", metavar="REF", help="the llama.cpp flake (as for `plan`)")
    parser.add_argument("--model", metavar="MODEL", help="this model (as for `plan`)")
    parser.add_argument("--quant", type=quant_name, metavar="Q", help="this quant")
    parser.add_argument("--ctx", type=context_size, metavar="N", help="this context size")
    parser.add_argument(
        "-fa", "--flash-attn", type=flash_attn_mode, default=None, metavar="on|off|auto",
        help="flash attention, as llama.cpp's -fa (as for `plan`)",
    )  # fmt: skip
    parser.add_argument(
        "-np", "--parallel", type=server_slots, default=None, metavar="N",
        help="llama-server's slots, as its -np N (as for `plan`)",
    )  # fmt: skip
    # No --mode: a cluster puts every layer on the devices of its hosts (tui/cluster/plan.py).
    add_memory_option(parser)
    parser.add_argument(
        "--address", action="append", default=[], metavar="HOST=ADDRESS",
        help="the address the head reaches HOST by (rpc-server binds to it); default: what "
        "its SSH name resolves to",
    )  # fmt: skip
    parser.add_argument(
        "--rpc-port", type=tcp_port, default=50052, metavar="P",
        help="rpc-server's port (default 50052; the next one for a second server on an address)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-public-rpc", action="store_true",
        help="bind rpc-server to a public address too (unauthenticated: only on a network "
        "that is yours alone)",
    )  # fmt: skip
    parser.add_argument(
        "--host", type=host_address, default="127.0.0.1", metavar="H",
        help="the head's llama-server address (default 127.0.0.1)",
    )  # fmt: skip
    parser.add_argument(
        "--port", type=tcp_port, default=8080, metavar="P", help="the head's llama-server port"
    )
    parser.add_argument(
        "--ssh-config", metavar="FILE", help="ssh's configuration file (default: ~/.ssh/config)"
    )
    parser.add_argument(
        "--host-timeout", type=float, default=20.0, metavar="S",
        help="seconds each host gets to answer over SSH (default 20)",
    )  # fmt: skip
    parser.add_argument(
        "--no-measure", action="store_true", help="do not measure the links to the SSH hosts"
    )
    parser.add_argument(
        "--no-build", action="store_true",
        help="up: start what is built already (no nix build on the hosts)",
    )  # fmt: skip
    return parser


def _addresses(given: list[str]) -> dict[str, str]:
    from llama_wizard.tui.cluster.plan import ClusterError

    addresses = {}
    for item in given:
        host, sep, address = item.partition("=")
        if not sep or not host or not address:
            raise ClusterError(
                f"--address {item!r} is not HOST=ADDRESS.",
                "Write it as --address gpu2=10.0.0.12 (the host as given on the command line).",
            )
        addresses[host] = address
    return addresses


def request_of(args: argparse.Namespace) -> ClusterRequest:
    from llama_wizard.tui.cluster.hosts import parse_hosts
    from llama_wizard.tui.cluster.plan import ClusterRequest

    return ClusterRequest(
        hosts=parse_hosts(args.hosts),
        flake=args.flake,
        model=args.model,
        quant=args.quant,
        ctx=args.ctx,
        rpc_port=args.rpc_port,
        addresses=_addresses(args.address),
        allow_public=args.allow_public_rpc,
        host=args.host,
        port=args.port,
        measure=not args.no_measure,
        timeout=args.host_timeout,
        flash_attn=args.flash_attn,
        n_parallel=args.parallel,
        memory=args.memory or "auto",
        root=args.root,
        simulate=args.simulate,
    )


def ssh_options(args: argparse.Namespace) -> SshOptions:
    from llama_wizard.tui.cluster.ssh import SshOptions

    return SshOptions(config=args.ssh_config, connect_timeout=min(args.host_timeout, 10.0))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError

    if args.action in NEEDS_HOSTS and not args.hosts:
        print_error(
            f"`cluster {args.action}` needs the hosts.",
            f"Name them, the head first: llama-wizard cluster {args.action} local user@gpu2",
        )
        return EXIT_ERROR
    try:
        if args.action == "status":
            return _status(args)
        if args.action == "down":
            return _down(args)
        plan = _plan(args)
        if args.action == "plan":
            return _show(plan, args)
        if args.action == "build":
            return _build(plan, args)
        return _up(plan, args)
    except ActionableError as error:
        print_error(error.message, error.fix)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print_error("Interrupted; everything this command started was stopped.")
        return 130


def _plan(args: argparse.Namespace) -> ClusterPlan:
    from llama_wizard.tui.cluster.plan import make_cluster_plan

    if not args.json:
        _say(f"Detecting {len(args.hosts)} host{'s' if len(args.hosts) != 1 else ''}...")
    return make_cluster_plan(request_of(args), ssh_options(args))


def _show(plan: ClusterPlan, args: argparse.Namespace) -> int:
    if args.json:
        json.dump(plan.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from llama_wizard.tui.cluster.text import plan_lines

        print("\n".join(plan_lines(plan)))
    return 0 if plan.model is not None and plan.model.verdict != "no" else EXIT_ERROR


def _progress(host: str, line: str) -> None:
    _say(f"[{host}] {line}")


def _build(plan: ClusterPlan, args: argparse.Namespace) -> int:
    from llama_wizard.tui.cluster.builds import build_hosts
    from llama_wizard.tui.cluster.text import build_lines

    results = build_hosts(plan, ssh_options(args), _progress)
    if args.json:
        json.dump({"builds": [r.to_json() for r in results]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    for result in results:
        _say("\n".join(build_lines(result)))
    return EXIT_ERROR if any(not r.ok for r in results) else 0


def _up(plan: ClusterPlan, args: argparse.Namespace) -> int:
    from llama_wizard.tui.cluster.plan import start_refusal
    from llama_wizard.tui.cluster.runtime import cluster_up

    refusal = start_refusal(plan)  # before anything is built
    if refusal is not None:
        raise refusal
    state = cluster_up(plan, ssh_options(args), _progress, build=not args.no_build)
    if args.json:
        json.dump(state.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        url = state.url
        _say(
            f"The cluster is up{f': {url}' if url else ''}. Stop it with: llama-wizard cluster down"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    from llama_wizard.tui.cluster.runtime import cluster_status

    status = cluster_status(ssh_options(args))
    if args.json:
        json.dump(status.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from llama_wizard.tui.cluster.text import status_lines

        print("\n".join(status_lines(status)))
    return 0 if status.up else EXIT_ERROR


def _down(args: argparse.Namespace) -> int:
    from llama_wizard.tui.cluster.runtime import cluster_down

    stopped = cluster_down(ssh_options(args))
    if args.json:
        json.dump({"stopped": stopped}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from llama_wizard.tui.format import plain_text

        print("\n".join(plain_text(line) for line in stopped))
    return 0
