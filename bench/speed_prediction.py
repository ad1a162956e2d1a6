"""Predicted vs published llama.cpp speeds for the calibration set
(models/data/speed_calibration.json), with the median and worst absolute error per backend for
generation (tg) and prompt processing (pp), fitted and leave-one-out.

    python -m bench.speed_prediction
    python -m bench.speed_prediction --measure-cpu ~/.cache/llama-wizard/llamacpp/0.3.36-x86_64/bin

The per-backend efficiencies, per-layer times and MoE factors are fitted on this same set
(models/speed.py fit_efficiencies) and every prediction goes through the product's own
predict_speed (models/speed.py predict_point). The "fitted" error therefore flatters; the
leave-one-out error predicts each point with a table fitted without it, which is what a new GPU
would see. Errors are printed per backend and per kind of point (dense/MoE, GPU/CPU).

--measure-cpu runs llama-bench from that directory on this machine (a generated Qwen3-0.6B-shaped
Q8_0 model, -p 64 -n 32), measures the RAM bandwidth the way the wizard does, and prints a `cpu`
calibration row to add to the data file.

(Run as a module: `python bench/speed_prediction.py` would put bench/ first on sys.path, where
bench/detect.py hides the detect package.)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llama_wizard.models.speed import (
    CalibrationPoint,
    Table,
    cpu_tflops,
    fit_efficiencies,
    ideal_rate,
    load_calibration,
    measure_ram_bandwidth,
    predict_point,
)

TARGET = {"tg": 25.0, "pp": 35.0}


def predicted(point: CalibrationPoint, fitted: Table) -> float | None:
    return predict_point(point, fitted)


def group_of(point: CalibrationPoint) -> str:
    """dense/MoE, GPU/CPU: the kinds of point the errors are also summed up by."""
    return f"{'moe' if point.moe else 'dense'}-{'cpu' if point.backend == 'cpu' else 'gpu'}"


def _summary(label: str, fit: list[float], loo: list[float]) -> str:
    return (f"  {label:14} {statistics.median(fit):5.1f} {max(fit):5.0f} | "
            f"{statistics.median(loo):5.1f} {max(loo):5.0f}   n={len(loo)}")  # fmt: skip


def error_pct(value: float, prediction: float) -> float:
    return (prediction - value) / value * 100


def report(points: list[CalibrationPoint]) -> tuple[dict[str, dict[str, list[float]]], bool]:
    """Print the table and the summary; returns the leave-one-out errors per backend and kind,
    and whether the leave-one-out medians meet the targets."""
    fitted = fit_efficiencies(points)
    used = [p for p in points if p.fit and ideal_rate(p)]
    print("Fitted on the set (efficiency: published / ideal; layer: seconds per layer per token):")
    for backend, kinds in sorted(fitted.items()):
        if backend == "moe":
            continue
        print(f"  {backend:7} tg {kinds['tg']:.3f}   pp {kinds['pp']:.3f}   "
              f"layer {kinds.get('layer_s', 0) * 1e6:.0f} µs")  # fmt: skip
    moe = fitted.get("moe", {})
    print(f"  MoE factor: tg {moe.get('tg', 1.0):.3f}   pp {moe.get('pp', 1.0):.3f}")
    print()
    header = f"{'GPU':32} {'backend':7} {'model':28} {'test':7} {'published':>10} "
    header += f"{'fitted':>9} {'err':>6} {'l-o-o':>9} {'err':>6}"
    print(header)
    errors: dict[str, dict[str, list[float]]] = {}
    in_sample: dict[str, dict[str, list[float]]] = {}
    by_group: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for point in points:
        fit_here = predicted(point, fitted)
        if not point.fit or fit_here is None:
            why = point.why_not or "no spec for this GPU"
            shown = f"{fit_here:9.1f}" if fit_here is not None else f"{'-':>9}"
            print(f"{point.gpu[:32]:32} {point.backend:7} {point.model[:28]:28} {point.test:7} "
                  f"{point.value:10.1f} {shown}   (not in the fit: {why})")  # fmt: skip
            continue
        others = [p for p in used if p is not point]
        loo = predicted(point, fit_efficiencies(others))
        assert loo is not None
        e_fit, e_loo = error_pct(point.value, fit_here), error_pct(point.value, loo)
        in_sample.setdefault(point.backend, {}).setdefault(point.kind, []).append(abs(e_fit))
        errors.setdefault(point.backend, {}).setdefault(point.kind, []).append(abs(e_loo))
        group = by_group.setdefault(point.kind, {}).setdefault(group_of(point), ([], []))
        group[0].append(abs(e_fit))
        group[1].append(abs(e_loo))
        print(f"{point.gpu[:32]:32} {point.backend:7} {point.model[:28]:28} {point.test:7} "
              f"{point.value:10.1f} {fit_here:9.1f} {e_fit:+5.0f}% "
              f"{loo:9.1f} {e_loo:+5.0f}%")  # fmt: skip
    print()
    print("Absolute error, % (fitted | leave-one-out): median, worst, points")
    ok = True
    for kind in ("tg", "pp"):
        every_fit: list[float] = []
        every_loo: list[float] = []
        for backend in sorted(errors):
            loo = errors[backend].get(kind, [])
            fit = in_sample[backend].get(kind, [])
            if not loo:
                continue
            every_fit += fit
            every_loo += loo
            print(_summary(f"{kind} {backend}", fit, loo))
        for group, (fit, loo) in sorted(by_group.get(kind, {}).items()):
            print(_summary(f"{kind} {group}", fit, loo))
        median_loo = statistics.median(every_loo)
        met = median_loo <= TARGET[kind]
        ok = ok and met
        print(f"  {kind} all     {statistics.median(every_fit):5.1f} {max(every_fit):5.0f} | "
              f"{median_loo:5.1f} {max(every_loo):5.0f}   n={len(every_loo)}   target: median "
              f"<= {TARGET[kind]:.0f} % ({'met' if met else 'NOT met'})")  # fmt: skip
    return errors, ok


def measure_cpu(bin_dir: Path) -> dict[str, object]:
    """A `cpu` calibration row measured on this machine (see the module docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.gguf_factory import QWEN3_0_6B, write_gguf

    with tempfile.TemporaryDirectory() as tmp:
        model = write_gguf(Path(tmp) / "qwen3-0.6b.gguf", QWEN3_0_6B)
        size = model.stat().st_size
        argv = [str(bin_dir / "llama-bench"), "-m", str(model), "-p", "64", "-n", "32",
                "-r", "2", "-o", "jsonl"]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    bandwidth = measure_ram_bandwidth()
    return {"rows": rows, "file_bytes": size, "ram_gbs": bandwidth}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure-cpu", metavar="BIN_DIR", type=Path)
    parser.add_argument("--data", type=Path, help="the calibration file (default: the bundled)")
    args = parser.parse_args(argv)
    if args.measure_cpu:
        from llama_wizard.detect.host import read_cpu
        from llama_wizard.detect.sysroot import SystemRoot

        measured = measure_cpu(args.measure_cpu)
        cpu = read_cpu(SystemRoot())
        for row in measured["rows"]:  # type: ignore[attr-defined]
            test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
            print(json.dumps({
                "gpu": "CPU", "backend": "cpu", "model": "Qwen3-0.6B-shaped Q8_0 (generated)",
                "size_gib": round(row["model_size"] / 2**30, 4),
                "params_b": round(row["model_n_params"] / 1e9, 3),
                "test": test, "value": round(row["avg_ts"], 2),
                "bandwidth_gbs": round(measured["ram_gbs"], 2),  # type: ignore[call-overload]
                "tflops": None if cpu is None else round(cpu_tflops(cpu), 3),
                "threads": row.get("n_threads"), "cpu": row.get("cpu_info"),
                "date": time.strftime("%Y-%m-%d"), "source": "measured on "
                f"{platform.node() or 'this machine'} with bench/speed_prediction.py --measure-cpu",
            }))  # fmt: skip
        return 0
    _errors, ok = report(load_calibration(args.data))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
