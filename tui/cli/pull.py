"""`llama-wizard pull MODEL[:QUANT]`: download a model's GGUF file(s) from the Hugging Face Hub
into the cache llama.cpp reads, with progress; later launches use the file with `-m`.

The quant: the one named (MODEL:QUANT or --quant), else the plan's best quant for this machine
(the session's fit on the chosen GPUs, or RAM without one). Output: a progress bar on a terminal
(stderr), a line every few seconds otherwise, JSON lines with --json (stdout); the file's path
last on stdout. Only argparse and the option helpers load when the subcommand is registered."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from llama_wizard.tui.cli.options import (
    add_estimate_options,
    context_size,
    gpu_list,
    print_error,
    quant_name,
)

if TYPE_CHECKING:
    from llama_wizard.models.choose import ModelChoice
    from llama_wizard.models.download import Progress
    from llama_wizard.tui.session import WizardSession

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
PLAIN_EVERY = 2.0  # seconds between plain progress lines


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `pull` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "pull",
        help="download a model's GGUF file(s) from the Hugging Face Hub, with progress",
        description=(
            "Download a model from the Hugging Face Hub into the cache llama.cpp reads with -hf "
            "(LLAMA_CACHE, else HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), "
            "after checking the free disk space; an interrupted download resumes. Split GGUFs "
            "come with all their parts. MODEL is owner/repo[:QUANT] (the catalogue's or any Hub "
            "repository); without a quant, the best one for this machine's GPUs (as `plan`). "
            "HF_TOKEN (for gated or private repositories), HF_ENDPOINT and HF_HUB_OFFLINE are "
            "honoured."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="owner/repo[:QUANT]")
    parser.add_argument(
        "--quant", type=quant_name, metavar="Q", help="this quant (default: the best that fits)"
    )
    parser.add_argument(
        "--ctx",
        type=context_size,
        metavar="N",
        help="choose the quant for this context size (default: as `plan`)",
    )
    parser.add_argument(
        "--gpu", metavar="N[,N]", type=gpu_list, help="choose the quant for these GPUs"
    )
    add_estimate_options(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help='JSON lines: {"event":"start",...}, {"event":"progress","file","done_bytes",'
        '"total_bytes","bytes_per_second"}, ..., last {"event":"done","path","bytes"} or '
        '{"event":"error","message","fix"}',
    )
    return parser


def choose(session: WizardSession, spec: str, quant: str | None, ctx: int | None) -> ModelChoice:
    """The quant to pull: the one named, else the best on this machine's planned memory (no
    build plan needed: the model's fit is the session's own)."""
    from llama_wizard.detect.errors import ActionableError

    session.detect()
    report = session.fit(session.resolve(spec, quant), ctx)
    named = quant is not None or ":" in spec.rsplit("/", 1)[-1]
    # A quant named (MODEL:QUANT or --quant) is the report's only one: pulled even when it does
    # not fit (the person asked for it); otherwise the best that fits.
    index = 0 if named and len(report.quants) == 1 else session.preselect(report, quant)
    if index is None:
        listed = ", ".join(c.quant for c in report.source.candidates)
        raise ActionableError(
            f"No quant of {spec} fits this machine's memory at {report.ctx} tokens.",
            f"Name one to download anyway: llama-wizard pull {report.source.repo or spec}:QUANT "
            f"(one of {listed}), or a smaller context (--ctx).",
        )
    return session.choice_at(report, index)


def _mode(args: argparse.Namespace, err: IO[str]) -> str:
    if args.json:
        return "json"
    if err.isatty() and os.environ.get("TERM", "dumb") not in ("", "dumb", "unknown"):
        return "rich"
    return "plain"


class _Show:
    """Progress in one of the three forms."""

    def __init__(self, mode: str, out: IO[str], err: IO[str], title: str) -> None:
        self.mode, self.out, self.err = mode, out, err
        self.last_plain = 0.0
        self.progress: Any = None
        self.task: Any = None
        self.file = ""
        if mode == "rich":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=err),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(title, total=None)

    def emit(self, event: str, **data: Any) -> None:
        self.out.write(json.dumps({"event": event, **data}) + "\n")
        self.out.flush()

    def update(self, progress: Progress) -> None:
        from llama_wizard.models.download import progress_line

        if self.mode == "json":
            self.emit("progress", **progress.to_json())
        elif self.mode == "rich":
            part = (
                f" ({progress.file_index}/{progress.file_count})" if progress.file_count > 1 else ""
            )
            what = "checking" if progress.phase == "checking" else "downloading"
            self.progress.update(
                self.task,
                description=f"{what} {progress.file.rsplit('/', 1)[-1]}{part}",
                completed=progress.done_bytes,
                total=progress.total_bytes,
            )
        else:
            now = time.monotonic()
            finished = progress.done_bytes >= progress.total_bytes
            if now - self.last_plain >= PLAIN_EVERY or finished or progress.file != self.file:
                self.last_plain = now
                self.file = progress.file
                print(progress_line(progress), file=self.err, flush=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.models.download import (
        DownloadCancelled,
        cache_dir,
        download,
        format_bytes,
        hub_target,
    )
    from llama_wizard.tui.cli.options import command_session

    out, err = sys.stdout, sys.stderr
    mode = _mode(args, err)
    show: _Show | None = None

    def fail(message: str, fix: str | None, code: int = EXIT_FAILED) -> int:
        if show is not None:
            show.stop()
        if mode == "json":
            out.write(json.dumps({"event": "error", "message": message, "fix": fix}) + "\n")
            out.flush()
        else:
            print_error(message, fix)
        return code

    model = args.model
    args.model = None  # the session's model choice is not this command's concern
    try:
        with command_session(args) as session:
            choice = choose(session, model, args.quant, args.ctx)
    except ActionableError as error:
        return fail(error.message, error.fix)
    target = hub_target(choice)
    if target is None:
        return fail(
            f"{model} is not a Hugging Face repository: there is nothing to pull.",
            "A .gguf path is used where it is (llama-wizard run --model PATH); pull takes "
            "owner/repo[:QUANT].",
        )
    where = cache_dir()
    if mode == "json":
        json_start = {"model": target.repo, "quant": target.quant, "cache": str(where),
                      "file_bytes": choice.file_bytes, "verdict": choice.verdict}  # fmt: skip
        out.write(json.dumps({"event": "start", **json_start}) + "\n")
        out.flush()
    else:
        fits = {"fits": "fits", "tight": "fits, tightly", "no": "does NOT fit"}[choice.verdict]
        print(f"pulling {target.spec} ({format_bytes(choice.file_bytes)}; {fits} here) into "
              f"{where}", file=err, flush=True)  # fmt: skip
    show = _Show(mode, out, err, f"downloading {target.spec}")
    try:
        result = download(target, on_progress=show.update)
    except KeyboardInterrupt:
        return fail(
            f"The download of {target.spec} was stopped; the part downloaded so far is kept.",
            "Run the same command again: it resumes where it stopped.",
            EXIT_INTERRUPTED,
        )
    except DownloadCancelled as error:
        return fail(error.message, error.fix, EXIT_INTERRUPTED)
    except ActionableError as error:
        return fail(error.message, error.fix)
    show.stop()
    if mode == "json":
        paths = [str(p) for p in result.paths]
        show.emit("done", path=str(result.path), bytes=result.bytes, paths=paths,
                  fetched_bytes=result.fetched_bytes)  # fmt: skip
    else:
        what = "downloaded" if result.fetched_bytes else "already here"
        print(f"{target.spec}: {what}, {format_bytes(result.bytes)}"
              + (f" in {len(result.paths)} parts" if len(result.paths) > 1 else ""),
              file=err)  # fmt: skip
        print(f"llama.cpp loads it with: -m {result.path}", file=err)
        print(result.path, file=out)
    return 0
