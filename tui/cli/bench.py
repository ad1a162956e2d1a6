"""`llama-wizard bench [MODEL]`: run llama-bench from the built output (or a directory given with
--llamacpp-bin) on a local model, show each test as it finishes, and record the speeds for this
machine (tui/measurements.py), where fit and the wizard then show them as measured.

Only argparse, json and sys are imported at module level, so registering the subcommand keeps
`llama-wizard --help` fast."""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llama_wizard.tui.cli.options import token_count
from llama_wizard.tui.cli.run import Output as RunOutput

EXIT_ERROR = 1
MODES = ("gpu", "moe-offload", "hybrid", "cpu")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `bench` on the top-level parser's subcommands."""
    parser = subparsers.add_parser(
        "bench",
        help="measure prompt and generation speed with llama-bench, and remember it",
        description=(
            "Run llama-bench (pp512 and tg128 by default) from the built flake output on a model "
            "that is already on this machine, show each result as it finishes, and record the "
            "speeds for this machine: `fit` and the wizard then show them as measured. MODEL is "
            "a .gguf path, or a catalogue id / owner/repo[:QUANT] already in llama.cpp's or the "
            "Hugging Face cache (nothing is downloaded)."
        ),
    )
    parser.add_argument("model", nargs="?", metavar="MODEL", help="a .gguf path or owner/repo[:Q]")
    parser.add_argument("--json", action="store_true", help="print JSON lines (events)")
    parser.add_argument(
        "-p", "--n-prompt", type=token_count, default=512, metavar="N",
        help="prompt tokens of the prompt-processing test (default: 512)",
    )  # fmt: skip
    parser.add_argument(
        "-n", "--n-gen", type=token_count, default=128, metavar="N",
        help="tokens of the generation test (default: 128)",
    )  # fmt: skip
    parser.add_argument(
        "-r", "--repetitions", type=token_count, default=3, metavar="N",
        help="repetitions of each test (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--llamacpp-bin", metavar="DIR", type=Path,
        help="take llama-bench from DIR instead of the built flake output",
    )  # fmt: skip
    parser.add_argument(
        "--output", metavar="NAME",
        help="the flake output to run (and to record the speeds under; default: the plan's)",
    )  # fmt: skip
    parser.add_argument(
        "--mode", choices=MODES,
        help="the run mode to record the speeds under (default: gpu when llama-bench offloads "
        "to a GPU, else cpu)",
    )  # fmt: skip
    parser.add_argument(
        "-t", "--threads", type=token_count, metavar="N",
        help="CPU threads for llama-bench (default: llama-bench's)",
    )  # fmt: skip
    return parser


class Output(RunOutput):
    """run's events (JSON lines on stdout with --json), and bench's text: its results on stdout
    (stderr in JSON mode, so stdout stays JSON)."""

    def say(self, text: str) -> None:
        print(text, file=self.err if self.json_mode else self.out, flush=True)

    def error(self, message: str, fix: str) -> int:
        from llama_wizard.tui.format import plain_text

        self.emit("error", message=message, fix=fix)
        print(plain_text(f"llama-wizard bench: {message}\n{fix}"), file=sys.stderr, flush=True)
        return EXIT_ERROR


def local_model(spec: str) -> tuple[Path, str, str | None]:
    """(file, the model's identity, its quant) for MODEL: a .gguf path, or a repo[:QUANT] found in
    llama.cpp's or the Hugging Face cache. Raises ModelNotFound (nothing is downloaded)."""
    from llama_wizard.models.errors import ModelNotFound
    from llama_wizard.models.local import find_local_models
    from llama_wizard.models.quant import normalize_quant

    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve(), str(path.resolve()), None
    if spec.lower().endswith(".gguf") or spec.startswith((".", "/", "~")):
        raise ModelNotFound(f"No file {path}.", "Check the path of the .gguf file.")
    repo, _, tag = spec.partition(":")
    quant = normalize_quant(tag) if tag else None
    found = [
        m
        for m in find_local_models()
        if m.repo is not None
        and m.repo.lower() == repo.lower()
        and (quant is None or (m.quant or "").upper() == quant)
    ]
    if not found:
        raise ModelNotFound(
            f"{spec} is not on this machine (not in llama.cpp's or the Hugging Face cache); "
            "bench does not download models.",
            f"Download it first (llama-wizard run --model {spec}, or llama-server -hf {spec}), "
            "or give the path of a .gguf file.",
        )
    chosen = max(found, key=lambda m: m.bytes)
    # The cache's spelling of the repo, not the one typed: fit and the wizard look it up so.
    return chosen.path, chosen.repo or repo, chosen.quant


def file_quant(path: Path) -> str:
    """The model file's quant as fit names it (its general.file_type), else "unknown"."""
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.models.source import resolve_model

    try:
        source = resolve_model(str(path))
    except ActionableError:
        return "unknown"
    return source.candidates[0].quant if source.candidates else "unknown"


def test_name(row: dict[str, Any]) -> str:
    prompt, gen = int(row.get("n_prompt") or 0), int(row.get("n_gen") or 0)
    if prompt and gen:
        return f"pp{prompt}+tg{gen}"
    return f"pp{prompt}" if prompt else f"tg{gen}"


def run_bench(argv: list[str], output: Output) -> tuple[list[dict[str, Any]], int, list[str]]:
    """Run llama-bench with `-o jsonl`, one line per finished test shown and emitted; (the
    results, its exit status, the last lines of its stderr)."""
    results: list[dict[str, Any]] = []
    tail: collections.deque[str] = collections.deque(maxlen=15)
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    import threading

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            text = line.strip()
            if not text.startswith("{"):
                continue
            try:
                row = json.loads(text)
            except ValueError:
                continue
            results.append(row)
            name = test_name(row)
            rate, spread = float(row.get("avg_ts") or 0), float(row.get("stddev_ts") or 0)
            output.emit("result", test=name, tokens_per_second=rate, stddev=spread,
                        n_gpu_layers=row.get("n_gpu_layers"),
                        backends=row.get("backends"))  # fmt: skip
            output.say(f"{name:>12}: {rate:10.2f} ± {spread:.2f} tokens/s")
        status = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    reader.join(timeout=5)
    return results, status, list(tail)


def run(args: argparse.Namespace) -> int:
    from llama_wizard.detect.errors import ActionableError
    from llama_wizard.tui import measurements
    from llama_wizard.tui.cli.options import command_session

    output = Output(args.json, sys.stdout, sys.stderr)
    extra = ["-t", str(args.threads)] if args.threads else []
    spec = args.model or getattr(args, "model_override", None)
    if not spec:
        return output.error(
            "Which model? bench needs a model that is already on this machine.",
            "Give a .gguf path or a repo in the cache: llama-wizard bench ~/models/m.gguf",
        )
    try:
        path, identity, quant = local_model(spec)
    except ActionableError as error:
        return output.error(error.message, error.fix)
    with command_session(args) as session:
        inventory = session.detect()
        out_name = args.output
        backend = None
        if args.llamacpp_bin is not None:
            binary = args.llamacpp_bin.expanduser() / "llama-bench"
            if out_name is None:
                try:
                    plan = session.make_plan()
                    out_name, backend = plan.build.output, plan.build.backend
                except ActionableError:
                    out_name = "default"
        else:
            try:
                plan = session.make_plan()
            except ActionableError as error:
                return output.error(error.message, error.fix)
            out_name = out_name or plan.build.output
            backend = plan.build.backend
            binary = Path(plan.build.out_link).absolute() / "bin" / "llama-bench"
        env_note = session.simulated
    if not binary.is_file():
        return output.error(
            f"llama-bench is not there: {binary} does not exist.",
            "Build the output first (llama-wizard build), or point at a directory that has it "
            "with --llamacpp-bin DIR.",
        )
    quant = (quant or file_quant(path)).upper()
    argv = [str(binary), "-m", str(path), "-p", str(args.n_prompt), "-n", str(args.n_gen),
            "-r", str(args.repetitions), "-o", "jsonl", *extra]  # fmt: skip
    output.emit("started", argv=argv, model=identity, quant=quant, output=out_name)
    output.say(f"$ {' '.join(argv)}")
    if env_note:
        output.say(f"(simulated hardware: {env_note}; llama-bench runs on this machine, and its "
                   "speeds are not recorded)")  # fmt: skip
    try:
        results, status, tail = run_bench(argv, output)
    except OSError as error:
        return output.error(f"llama-bench could not be started: {error}.",
                            f"Check that {binary} is executable.")  # fmt: skip
    if status != 0 or not results:
        for line in tail:
            output.say(f"  {line}")
        return output.error(
            f"llama-bench ended with status {status}"
            + (" without a result." if not results else "."),
            "Its last lines are above; check the model file and the options.",
        )
    prompt = next((r for r in results if r.get("n_prompt") and not r.get("n_gen")), None)
    gen = next((r for r in results if r.get("n_gen") and not r.get("n_prompt")), None)
    offloaded = any(int(r.get("n_gpu_layers") or 0) > 0 for r in results)
    gpu_backend = backend not in (None, "cpu") and bool(inventory.gpus)
    mode = args.mode or ("gpu" if offloaded and gpu_backend else "cpu")
    tests = "/".join(test_name(r) for r in (prompt, gen) if r is not None)
    key = measurements.machine_key(inventory)
    recorded = None
    notes: list[str] = []
    if key is not None:
        measurement = measurements.Measurement(
            machine=key[0],
            output=out_name,
            model=measurements.model_identity(identity),
            quant=quant,
            ctx=None,
            mode=mode,
            program="llama-bench",
            test=tests,
            prompt_tps=float(prompt["avg_ts"]) if prompt else None,
            generation_tps=float(gen["avg_ts"]) if gen else None,
            prompt_tokens=int(prompt["n_prompt"]) if prompt else None,
            generated_tokens=int(gen["n_gen"]) if gen else None,
            at=time.time(),
            machine_label=key[1],
        )
        recorded, notes = measurements.record(measurement)
    for note in notes:
        output.say(f"note: {note}")
    if recorded is not None:
        output.emit("recorded", path=str(measurements.measurements_path()),
                    measurement=recorded.to_json())  # fmt: skip
        output.say(f"Recorded for this machine ({out_name}, {quant}, {mode}) in "
                   f"{measurements.measurements_path()}.")  # fmt: skip
    output.emit("done", results=len(results), recorded=recorded is not None)
    return 0
