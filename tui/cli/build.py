"""`llama-wizard build`: run (or reattach to) the plan's nix build with live progress."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from llama_wizard.tui.cli.options import add_nix_setup_option, gpu_list, print_error

if TYPE_CHECKING:
    from llama_wizard.nix.build import BuildRecord
    from llama_wizard.nix.events import BuildProgress

EXIT_FAILED, EXIT_CANCELLED = 1, 130


class JsonLines:
    """`build --json`: one event per line (started, log, phase, progress, result)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.logged = 0
        self.phases: dict[int, str | None] = {}
        self.last_progress: dict[str, Any] | None = None
        self.last_progress_time = 0.0

    def emit(self, event: str, **data: Any) -> None:
        self.stream.write(json.dumps({"event": event, **data}) + "\n")
        self.stream.flush()

    def update(self, progress: BuildProgress, force: bool = False) -> None:
        new = progress.lines_logged - self.logged
        if new > 0:
            for line in list(progress.tail)[-min(new, len(progress.tail)) :]:
                self.emit("log", line=line.text, source=line.source)
            self.logged = progress.lines_logged
        for build in progress.running.values():
            if self.phases.get(build.activity_id) != build.phase and build.phase:
                self.emit("phase", drv=build.drv_path, name=build.name, phase=build.phase)
            self.phases[build.activity_id] = build.phase
        snapshot = progress.snapshot()
        comparable = {k: v for k, v in snapshot.items() if k != "elapsed"}
        for entry in comparable["running"]:
            entry.pop("seconds", None)
        now = time.monotonic()
        if force or (comparable != self.last_progress and now - self.last_progress_time > 0.25):
            self.emit("progress", **snapshot)
            self.last_progress, self.last_progress_time = comparable, now


def follow_build(
    record: BuildRecord, mode: str, title: str, out: IO[str], err: IO[str]
) -> tuple[BuildRecord, BuildProgress]:
    """Follow the build to its end, drawing progress; Ctrl-C cancels it (a second one stops
    following and leaves the cancel running)."""
    from llama_wizard.nix.build import LogFollower, read_record, request_cancel
    from llama_wizard.nix.events import BuildProgress
    from llama_wizard.tui.build_view import plain_status, progress_renderable

    progress = BuildProgress(wall_started=record.started_timestamp)  # elapsed from its start
    json_lines = JsonLines(out) if mode == "json" else None
    live = None
    if mode == "rich":
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(file=err), refresh_per_second=8, transient=False)
        live.start()
    last_plain = 0.0
    interrupts: list[int] = []
    cancel_sent = False

    def on_interrupt(signum: int, frame: object) -> None:
        del signum, frame
        interrupts.append(1)
        if len(interrupts) > 1:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting, the cancel goes on

    previous_handler = signal.signal(signal.SIGINT, on_interrupt)
    follower = LogFollower(record)
    try:
        while not follower.done:
            if interrupts and not cancel_sent:
                cancel_sent = True
                request_cancel(read_record(record))
                if json_lines:
                    json_lines.emit("cancelling")
                else:
                    print("cancelling the build (Ctrl-C again to stop waiting)…", file=err,
                          flush=True)  # fmt: skip
            batch = follower.read()
            if not batch:
                time.sleep(0.05)
            for line in batch:
                progress.feed(line)
            if json_lines:
                json_lines.update(progress)
            elif live is not None:
                live.update(progress_renderable(progress, title, time.monotonic()))
            elif time.monotonic() - last_plain > 2 and batch:
                print(plain_status(progress), file=err, flush=True)
                last_plain = time.monotonic()
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        follower.close()
        if live is not None:
            final = read_record(record)
            live.update(
                progress_renderable(
                    progress,
                    title,
                    time.monotonic(),
                    finished=final.status if final.finished else None,
                )
            )
            live.stop()
    if json_lines:
        json_lines.update(progress, force=True)
    return read_record(record), progress


def _report(record: BuildRecord, progress: BuildProgress, mode: str, out: IO[str],
            err: IO[str]) -> int:  # fmt: skip
    from llama_wizard.nix.build import describe_record
    from llama_wizard.nix.diagnose import diagnose

    described = describe_record(record)
    failure = diagnose(progress, record) if record.status in ("failed", "lost") else None
    if mode == "json":
        payload = dict(described)
        if failure is not None:
            payload["failure"] = failure.to_json()
        out.write(json.dumps({"event": "result", **payload}) + "\n")
    elif record.status == "succeeded":
        print(f"built {record.output} in {record.started} → {record.ended}", file=err)
        print(f"log: {record.text_log}", file=err)
    elif record.status == "cancelled":
        print(f"build of {record.output} cancelled; its log is kept: {record.text_log}", file=err)
    else:
        print(f"build of {record.output} {record.status}"
              + (f": {record.note}" if record.note else ""), file=err)  # fmt: skip
        if failure is not None:
            if failure.last_lines:
                print("last lines of its log:", file=err)
                for line in failure.last_lines[-15:]:
                    print(f"  {line}", file=err)
            for line in failure.report_lines():
                print(line, file=err)
    if record.status == "succeeded":
        if mode != "json" and record.out_paths:
            print(record.out_paths[-1], file=out)
        return 0
    return EXIT_CANCELLED if record.status == "cancelled" else EXIT_FAILED


def run_build(
    build_argv: list[str],
    output: str,
    state_dir,
    *,
    out_link: str | None,
    mode: str,
    detach: bool = False,
    env: dict[str, str] | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
    name: str | None = None,
) -> int:
    """Build `output` (what the messages call it) under `name` (BuildChoice.build_name: the
    build's record and lock, per flake), or follow its build if one is running."""
    # Imported here: registering the subcommand must not load the build machinery.
    from llama_wizard.nix.build import BuildAlreadyRunning, describe_record, find_build, start_build

    existing = find_build(state_dir, name or output)
    if existing is not None and not existing.finished:
        record = existing
        event = "attached"
    else:
        if existing is not None and mode != "json":
            print(f"last build of {output}: {existing.status} ({existing.ended or '?'}), "
                  f"log {existing.text_log}", file=err)  # fmt: skip
        try:
            record = start_build(
                build_argv, output, state_dir, out_link=out_link, env=env, name=name
            )
            event = "started"
        except BuildAlreadyRunning as error:
            record, event = error.record, "attached"
    if mode == "json":
        out.write(json.dumps({"event": event, **describe_record(record),
                              "pid": record.supervisor_pid}) + "\n")  # fmt: skip
        out.flush()
    else:
        verb = "reattached to the running" if event == "attached" else "started the"
        print(f"{verb} build of {output} (pid {record.supervisor_pid}); log: {record.text_log}",
              file=err)  # fmt: skip
    if detach:
        if mode != "json":
            print("it keeps running in the background; `llama-wizard build` follows it again",
                  file=err)  # fmt: skip
        return 0
    record, progress = follow_build(record, mode, f"Building {output}", out, err)
    return _report(record, progress, mode, out, err)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `build` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "build",
        help="run nix build for the plan's output (or OUTPUT) with live progress",
        description="Build the plan's flake output (or OUTPUT) with live progress. The build "
        "keeps running if this terminal goes away; running the command again follows it.",
    )
    parser.add_argument("output", nargs="?", help="flake output to build (default: the plan's)")
    parser.add_argument("--flake", metavar="REF", help="the llama.cpp flake (as for `plan`)")
    parser.add_argument(
        "--gpu", metavar="N[,N]", type=gpu_list, help="use these GPUs (as for `plan`)"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines: one event per line")
    parser.add_argument(
        "--detach", action="store_true", help="start the build and return; follow it later"
    )
    add_nix_setup_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui.cli.options import command_session
    from llama_wizard.tui.plan import state_dir

    with command_session(args) as session:
        try:
            plan = session.make_plan()
            session.check_can_build()
        except ActionableError as error:
            print_error(error.message, error.fix)
            return 1
        machine = session.machine
        for cost in plan.build.costs:
            print(f"note: {cost}", file=sys.stderr)
        if args.json:
            mode = "json"
        elif sys.stderr.isatty() and os.environ.get("TERM") != "dumb":
            mode = "rich"
        else:
            mode = "plain"
        return run_build(
            plan.build.build_argv,
            plan.build.build_label,
            state_dir(),
            out_link=plan.build.out_link,
            mode=mode,
            detach=args.detach,
            env=machine.env,
            name=plan.build.build_name,
        )
