"""`llama-wizard run`: launch llama-completion (or llama-server) from the plan and stream it.

Only argparse and the option helpers are imported at module level, so registering the
subcommand keeps `llama-wizard --help` fast."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import IO, TYPE_CHECKING, Any

from llama_wizard.tui.cli.options import (
    add_memory_option,
    add_mode_option,
    add_nix_setup_option,
    context_size,
    gpu_list,
    host_address,
    print_error,
    quant_name,
    tcp_port,
    token_count,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from llama_wizard.tui.launch import LaunchSpec, Timing

EXIT_ERROR, EXIT_USAGE = 1, 2
POLL_SECONDS = 0.1


class _UsageWithArgs(argparse.HelpFormatter):
    """The usage line ends with `[-- ARGS]`: argparse would show the program's arguments (a
    REMAINDER) as `...` at best, which does not say that they go after `--`."""

    def _format_usage(self, *args: Any, **kwargs: Any) -> str:
        return super()._format_usage(*args, **kwargs).rstrip("\n") + " [-- ARGS]\n\n"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `run` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "run",
        formatter_class=_UsageWithArgs,
        help="launch llama-completion (or llama-server) with the plan's flags and environment",
        description=(
            "Launch the built llama-completion (or, with --server, llama-server) with the plan's "
            "model, flags and GPU environment, and stream its output. Ctrl-C stops it and "
            "everything it started. The exit status is the program's. ARGS, after `--`, go to "
            "the program as they are (llama-wizard run -- --temp 0.2)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines (events)")
    parser.add_argument(
        "--server", action="store_true", help="run llama-server instead of llama-completion"
    )
    parser.add_argument(
        "--prompt", metavar="P", help="the prompt to complete (default: 'The capital of France is')"
    )
    parser.add_argument(
        "-n",
        "--n-predict",
        type=token_count,
        default=128,
        metavar="N",
        help="tokens to generate (default: 128)",
    )
    parser.add_argument(
        "--host",
        type=host_address,
        default="127.0.0.1",
        metavar="H",
        help="llama-server's address (default 127.0.0.1: this machine only; any other "
        "address gets an API key, see README)",
    )
    parser.add_argument(
        "--port", type=tcp_port, default=8080, metavar="P", help="llama-server's port (8080)"
    )
    # Not given here: whatever was given before `run` (the wizard's own options) holds.
    unset = argparse.SUPPRESS
    parser.add_argument(
        "--model",
        default=unset,
        metavar="M",
        help="run this model (GGUF path, URL or owner/repo[:QUANT]; default: the plan's)",
    )
    parser.add_argument(
        "--quant", default=unset, type=quant_name, metavar="Q", help="run this quant (Q4_K_M)"
    )
    parser.add_argument(
        "--ctx", default=unset, type=context_size, metavar="N", help="context size in tokens"
    )
    parser.add_argument(
        "--flake",
        default=unset,
        metavar="REF",
        help="the llama.cpp flake (default: this directory if it holds one, else "
        "github:ggml-org/llama.cpp)",
    )
    parser.add_argument("--output", metavar="NAME", help="run this flake output's build")
    add_mode_option(parser, default=unset)
    add_memory_option(parser)
    add_nix_setup_option(parser)
    parser.add_argument(
        "--gpu",
        default=unset,
        metavar="N[,N]",
        type=gpu_list,
        help="use these GPUs (indices from `detect`)",
    )
    parser.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


class Output:
    """Where events go: JSON lines on stdout, or the program's own streams as plain text."""

    def __init__(self, json_mode: bool, out: IO[str], err: IO[str]) -> None:
        self.json_mode, self.out, self.err = json_mode, out, err

    def emit(self, event: str, **data: Any) -> None:
        if self.json_mode:
            self.out.write(json.dumps({"event": event, **data}) + "\n")
            self.out.flush()

    def note(self, text: str) -> None:
        """A line of ours (not the program's): stderr in plain mode (`code` spans in quotes),
        nothing in JSON mode."""
        if not self.json_mode:
            from llama_wizard.tui.format import plain_text

            print(plain_text(text), file=self.err, flush=True)

    def line(self, stream: str, line: str) -> None:
        if self.json_mode:
            self.emit("output", stream=stream, line=line)
        else:
            print(line, file=self.out if stream == "stdout" else self.err, flush=True)


def run_spec(
    spec: LaunchSpec,
    output: Output,
    *,
    url: str | None = None,
    simulated: str | None = None,
    grace: float = 5.0,
    on_exit: Callable[[Timing], list[str]] | None = None,
) -> int:
    """Start the program, stream it to the end, stop it (and its tree) on Ctrl-C, SIGTERM or
    SIGHUP. Returns the program's exit status (128 + N when a signal N ended it).

    Each of llama.cpp's timing lines gives a `timing` event (llama-server prints them per
    request); its readiness line a `listening` event and the note "llama-server is up", then
    one short chat request (tui/first_request.py) whose reply gives a `first_answer` event (or
    `first_answer_error`) and a note; the end an `exited` event with how it ended
    (tui.launch.describe_exit: the signal's name and what to try when it crashed), also written
    out as text."""
    from llama_wizard.tui.first_request import FirstRequest, FirstRequestError, ask_server
    from llama_wizard.tui.launch import LaunchedProcess, Timing, is_listening

    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        del frame
        signals.append(signum)

    handled = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    process = None
    asking: FirstRequest | None = None
    try:
        process = LaunchedProcess.start(spec)
        output.emit(
            "started",
            argv=spec.display_argv(),
            pid=process.pid,
            program=spec.program,
            command=spec.shell_command(),
            **({"simulated": simulated} if simulated else {}),
        )
        output.note(f"$ {spec.shell_command()}")
        if simulated:
            output.note(
                f"(simulated hardware: {simulated}; the program runs on this machine's GPUs, "
                "if any)"
            )
        if url:
            output.emit("url", url=url)
            output.note(f"llama-server: {url} (Ctrl-C stops it)")
        timing = Timing()
        stopping = listening = False
        while not process.finished:
            if signals and not stopping:
                stopping = True
                output.emit("stopping", signal=signal.Signals(signals[0]).name)
                output.note(f"stopping {spec.program}…")
                if asking is not None:
                    asking.abandon()
                process.stop(grace)
            for stream, line in process.lines(POLL_SECONDS):
                output.line(stream, line)
                said = timing.take(line)
                if said is not None:
                    task = {"slot": said.slot, "task": said.task} if said.task is not None else {}
                    output.emit("timing", kind=said.kind, **timing.to_json(), **task)
                if url and not listening and is_listening(line):
                    listening = True
                    output.emit("listening", url=url, line=line)
                    output.note(f"llama-server is up: {url}")
                    asking = ask_server(spec, url, os.environ)
            answer = asking.poll() if asking is not None else None
            if isinstance(answer, FirstRequestError):
                asking = None
                output.emit("first_answer_error", **answer.to_json())
                output.note(f"⚠ {answer.message} {answer.fix}")
            elif answer is not None:
                asking = None
                output.emit("first_answer", **answer.to_json())
                output.note(answer.summary())
        if asking is not None:
            asking.abandon()  # the server stopped before it answered
        process.stop(grace)
        report = process.exit_report()
        # Remember llama.cpp's speeds for this machine (tui/measurements.py): fit shows them.
        # Said before `exited`, which stays the last event of a run.
        for text in on_exit(timing) if on_exit is not None else []:
            output.emit("note", message=text)
            output.note(f"note: {text}")
        output.emit(
            "exited",
            returncode=process.returncode,
            status=report.status,
            timing=timing.to_json(),
            **report.to_json(),
        )
        summary = timing.summary()
        if summary:
            output.note(summary)
        if report.status != 0 or process.stopped_on_purpose:
            for line in report.text_lines():
                output.note(line)
            if report.fix:
                output.note(report.fix)
        return report.status
    finally:
        if process is not None:
            process.stop(grace)  # no-op once stopped; also when our own output pipe broke
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui.cli.options import command_session
    from llama_wizard.tui.launch import launch_spec, server_url
    from llama_wizard.tui.measurements import record_launch

    output = Output(args.json, sys.stdout, sys.stderr)
    extra = list(args.extra or [])
    if extra and extra[0] != "--":
        print(
            f"llama-wizard run: unexpected argument {extra[0]!r}; arguments for the program go "
            "after `--` (llama-wizard run -- --temp 0.2)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    extra = extra[1:]
    program = "llama-server" if args.server else "llama-completion"
    with command_session(args) as session:
        try:
            plan = session.make_plan()
            # llama.cpp's own list of devices, before the launch: a Vulkan launch's --device,
            # and a build that does not see the chosen GPUs said with its fix.
            devices = session.check_devices()
            spec = launch_spec(
                plan,
                program=program,
                prompt=args.prompt,
                n_predict=args.n_predict,
                host=args.host,
                port=args.port,
                extra_args=extra,
            )
        except ActionableError as error:
            output.emit("error", message=error.message, fix=error.fix)
            print_error(error.message, error.fix)
            return EXIT_ERROR
        simulated = session.simulated
        device_notes = session.take_notes()
    if devices is not None:
        output.emit("devices", **devices.to_json())
        for text in devices.lines():
            output.note(text)
    for text in device_notes:
        output.emit("note", message=text)
        output.note(f"note: {text}")
    for warning in plan.warnings + plan.build.warnings:
        output.emit("warning", code=warning.code, message=warning.message, fix=warning.fix)
        output.note(f"warning: {warning.message} {warning.fix}")
    if "LLAMA_API_KEY" in spec.env:
        from llama_wizard.tui.apikey import api_key_path, key_note

        output.emit("api_key", file=str(api_key_path()), message=key_note(args.host))
        output.note(f"note: {key_note(args.host)}")
    url = server_url(args.host, args.port) if args.server else None
    try:
        return run_spec(spec, output, url=url, simulated=simulated, grace=grace_seconds(),
                        on_exit=lambda timing: record_launch(plan, timing, program)[1])  # fmt: skip
    except ActionableError as error:
        output.emit("error", message=error.message, fix=error.fix)
        print_error(error.message, error.fix)
        return EXIT_ERROR


def grace_seconds() -> float:
    """How long stopping waits between SIGINT, SIGTERM and SIGKILL: 5 s, or
    LLAMA_WIZARD_CANCEL_GRACE (the same setting as for cancelling a build)."""
    try:
        return max(0.1, float(os.environ.get("LLAMA_WIZARD_CANCEL_GRACE", "5")))
    except ValueError:
        return 5.0
