"""The ranked list (tui/ranking.py) and the speed in every table: `fit --list` and its JSON, the
score's order, the sort keys, the bundled profiles, and a speed measured on this machine (the
real llama-bench of the tests' CPU build) shown as measured by `fit`, `fit --list`, the
session's rows and plain mode, under every name the same file goes by."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llama_wizard.detect.simulate import list_profiles
from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.speed import Speed
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.ranking import TIERS, score_of, speed_text
from llama_wizard.tui.session import Overrides, WizardSession
from tests.helpers import run_cli, wizard_executable
from tests.llamacpp import fixture_dense_gguf, fixture_llamacpp_bin  # noqa: F401
from tests.nix_fixtures import fixture_flake
from tests.plain_helpers import run_piped

SMALL = "Qwen/Qwen3-0.6B-GGUF"  # its only quant is Q8_0


@contextmanager
def session_on(profile: str | None, **overrides: object) -> Iterator[WizardSession]:
    with open_machine(None, profile) as machine:
        session = WizardSession(machine, None, Overrides(**overrides))  # type: ignore[arg-type]
        session.detect()
        yield session


def fit_json(*argv: str, cwd: Path | None = None) -> dict:
    result = subprocess.run([wizard_executable(), "fit", *argv, "--json"], capture_output=True,
                            text=True, timeout=120, cwd=cwd, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- the order ---------------------------------------------------------------------------------


def test_the_score_orders_gpu_first_then_size_then_bits_then_speed() -> None:
    fast, slow = Speed(None, 900.0, "predicted", ""), Speed(None, 2.0, "predicted", "")
    # Tier first: a small model all on the GPU before a huge one with part in RAM.
    assert score_of(TIERS["tight"], 0.6, 8.5, slow) > score_of(TIERS["ram"], 405.0, 16.0, fast)
    assert score_of(TIERS["ram"], 0.6, 4.0, slow) > score_of(TIERS["cpu"], 70.0, 8.5, fast)
    assert score_of(TIERS["cpu"], 0.6, 4.0, None) > score_of(TIERS["no"], 120.0, 4.0, None)
    # Then the bigger model, whatever its quant and speed...
    assert score_of(3, 8.2, 4.5, slow) > score_of(3, 8.1, 16.0, fast)
    # ...then the higher quant, then the faster.
    assert score_of(3, 8.2, 8.5, slow) > score_of(3, 8.2, 8.49, fast)
    assert score_of(3, 8.2, 8.5, fast) > score_of(3, 8.2, 8.5, slow)
    assert score_of(3, 8.2, 4.85, Speed(None, 42.0, "measured", "")) == 3008.20485042


def test_fit_list_ranks_the_catalogue_for_the_gpu() -> None:
    document = fit_json("--list", "--simulate", "rtx4090")
    rows = document["models"]
    assert document["simulated"] == "rtx4090" and document["sort"] == "score"
    repos = [row["model"] for row in rows]
    assert sorted(repos) == sorted(m.repo for m in load_catalogue().models)  # each once
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    tiers = [TIERS[row["badge"]] for row in rows]
    assert tiers == sorted(tiers, reverse=True)
    # Within all-on-the-GPU: the bigger model first.
    on_gpu = [row for row in rows if row["badge"] in ("fits", "tight")]
    assert len(on_gpu) >= 5 and all(row["mode"] == "gpu" for row in on_gpu)
    sizes = [round(row["params_b"], 1) for row in on_gpu]
    assert sizes == sorted(sizes, reverse=True)
    # gpt-oss 120B (60 GiB) runs on a 24 GiB GPU only with its experts in RAM: ranked below
    # every model that fits, though it is the biggest.
    big = next(row for row in rows if row["model"] == "ggml-org/gpt-oss-120b-GGUF")
    assert big["badge"] == "ram" and big["mode"] == "moe-offload" and big["n_cpu_moe"] >= 1
    assert repos.index(big["model"]) > max(repos.index(row["model"]) for row in on_gpu)
    # A row is a `fit --json` quant row plus the model and its score.
    single = fit_json(SMALL, "--simulate", "rtx4090")["quants"][0]
    small = next(row for row in rows if row["model"] == SMALL)
    assert set(single) <= set(small) and {"model", "score", "badge", "rank"} <= set(small)
    assert small["quant"] == single["quant"] and small["speed"] == single["speed"]
    speed = small["speed"]
    assert speed["source"] == "predicted" and speed["generation_tps"] > 0
    assert speed["prompt_tps"] > 0 and "simulated rtx4090" in speed["basis"]


def test_the_sort_keys_and_the_text_table() -> None:
    by_speed = fit_json("--list", "--simulate", "2x-mi50", "--sort", "speed")["models"]
    running = [row for row in by_speed if row["verdict"] != "no"]
    rates = [row["speed"]["generation_tps"] for row in running]
    assert rates == sorted(rates, reverse=True)
    by_name = fit_json("--list", "--simulate", "2x-mi50", "--sort", "name")["models"]
    names = [row["name"].casefold() for row in by_name]
    assert names == sorted(names)
    by_size = fit_json("--list", "--simulate", "2x-mi50", "--sort", "size")["models"]
    sizes = [row["params_b"] for row in by_size]
    assert sizes == sorted(sizes, reverse=True) and by_size[0]["params_b"] > 100
    # The text table lists the same order, with the speed marked as predicted.
    shown = run_cli("fit", "--list", "--simulate", "2x-mi50", "--sort", "speed",
                    env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80
    order = [line.split()[0] for line in shown.stdout.splitlines() if line.split() and
             line.split()[0] in {row["model"] for row in by_speed}]  # fmt: skip
    assert order == [row["model"] for row in by_speed]
    fastest = next(line for line in shown.stdout.splitlines() if line.startswith(order[0]))
    assert re.search(r" ~\d+(\.\d)?$", fastest), fastest
    assert "~ predicted, m measured on this machine" in " ".join(shown.stdout.split())
    wrong = run_cli("fit", "--list", "--sort", "fastest")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    alone = run_cli("fit", SMALL, "--sort", "speed", "--simulate", "rtx4090")
    assert alone.returncode == 2 and "Use it with --list" in alone.stderr


def test_every_bundled_profile_gets_a_ranked_list() -> None:
    for profile in list_profiles():
        with session_on(profile) as session:
            ranked = session.ranked()
            rows = session.model_rows()
        assert ranked, profile
        scores = [row.score for row in ranked]
        assert scores == sorted(scores, reverse=True), profile
        running = [row for row in ranked if row.best is not None]
        assert running, f"{profile}: nothing runs"
        gpu_machine = any(not d.host for d in ranked[0].report.devices)
        for row in running:
            assert row.speed is not None and row.speed.source == "predicted", profile
            if not gpu_machine:
                assert row.badge in ("fits", "tight") and row.estimate.mode == "cpu", profile
        # The faces' rows: the same order, with the badge and the speed cell.
        assert [r.repo for r in rows] == [r.model for r in ranked], profile
        for row in rows:
            assert row.badge_text and (row.speed_text == "-") == (row.best_quant is None or
                                                                  row.speed is None or
                                                                  row.speed.generation_tps
                                                                  is None), profile  # fmt: skip


def test_vram_sizes_have_no_speed_and_a_row_that_does_not_run_has_none() -> None:
    document = fit_json(SMALL, "--vram", "8GiB", "--ram", "16GiB")
    speed = document["quants"][0]["speed"]
    assert speed["generation_tps"] is None and "--vram" in speed["basis"]
    over = fit_json("bartowski/Meta-Llama-3.1-70B-Instruct-GGUF", "--quant", "Q8_0",
                    "--simulate", "rtx4090", "--ctx", "131072")["quants"][0]  # fmt: skip
    assert over["verdict"] == "no" and over["speed"]["generation_tps"] is None


def test_plan_json_gives_the_models_speed() -> None:
    result = run_cli("plan", "--json", "--simulate", "rtx4090")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)["model"]
    assert model["speed"]["source"] == "predicted" and model["speed"]["generation_tps"] > 0
    row = fit_json(model["model"], "--quant", model["quant"], "--simulate", "rtx4090",
                   "--ctx", str(model["ctx"]))["quants"][0]  # fmt: skip
    assert row["speed"] == model["speed"]


# --- measured on this machine ------------------------------------------------------------------


def _bench(spec: str, llamacpp_bin: Path, output: str, mode: str) -> dict:
    result = run_cli(
        "bench", spec, "--llamacpp-bin", str(llamacpp_bin), "--output", output, "--mode", mode,
        "-p", "16", "-n", "4", "-r", "1", "-t", "2", "--json", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return next(e for e in events if e["event"] == "recorded")["measurement"]


def test_a_benched_model_shows_as_measured_in_fit_the_list_the_session_and_plain_mode(
    dense_gguf: Path, llamacpp_bin: Path, tmp_path: Path
) -> None:
    cache = Path(os.environ["XDG_CACHE_HOME"])
    # The catalogue's Qwen3 0.6B Q8_0 as the Hugging Face cache holds it (a snapshot link to a
    # blob; the small generated model stands in for the real file)...
    snapshot = cache / "huggingface/hub/models--Qwen--Qwen3-0.6B-GGUF/snapshots/0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "Qwen3-0.6B-Q8_0.gguf").symlink_to(dense_gguf)
    # ...and a file of no catalogue model in llama.cpp's cache.
    own = cache / "llama.cpp" / "my-dense-Q8_0.gguf"
    own.parent.mkdir(parents=True)
    shutil.copyfile(dense_gguf, own)

    with session_on(None) as session:
        context = session.speed_context()
        before = {row.model: row for row in session.ranked()}
    assert before[SMALL].speed is not None and before[SMALL].speed.source == "predicted"
    assert before[str(own)].entry.kind == "local" and before[SMALL].cached
    output = context.output

    # Benched by its repo id, as `bench` finds it in the cache; the other file by its path.
    small = _bench(f"{SMALL}:Q8_0", llamacpp_bin, output, before[SMALL].estimate.mode)
    mine = _bench(str(own), llamacpp_bin, output, before[str(own)].estimate.mode)
    assert small["model"] == SMALL and mine["model"] == str(own.resolve())

    listed = {row["model"]: row for row in fit_json("--list")["models"]}
    assert listed[SMALL]["speed"]["source"] == "measured"
    assert listed[SMALL]["speed"]["generation_tps"] == round(small["generation_tps"], 1)
    assert listed[str(own)]["speed"]["source"] == "measured" and listed[str(own)]["cached"]
    assert listed[str(own)]["speed"]["generation_tps"] == round(mine["generation_tps"], 1)
    others = [row for m, row in listed.items() if m not in (SMALL, str(own)) and row["speed"]]
    assert others and all(row["speed"]["source"] == "predicted" for row in others)
    # `fit MODEL`: the catalogue repo, and the local file by a relative path from its folder.
    assert fit_json(SMALL)["quants"][0]["speed"]["source"] == "measured"
    relative = fit_json(f"./{own.name}", cwd=own.parent)["quants"][0]["speed"]
    assert relative["source"] == "measured"
    assert relative["generation_tps"] == round(mine["generation_tps"], 1)
    # The same file measured under its path counts for the catalogue row too (an alias).
    via_path = cache / "huggingface/hub/models--Qwen--Qwen3-4B-GGUF/snapshots/0123abc"
    via_path.mkdir(parents=True)
    (via_path / "Qwen3-4B-Q8_0.gguf").symlink_to(own)
    with session_on(None) as session:
        four_b = next(r for r in session.ranked() if r.model == "Qwen/Qwen3-4B-GGUF")
    assert four_b.cached and four_b.quant == "Q8_0"
    assert four_b.speed is not None and four_b.speed.source == "measured"

    # The text table marks it, and a simulated machine never shows it.
    shown = run_cli("fit", "--list", env={**os.environ, "COLUMNS": "80"})
    line = next(line for line in shown.stdout.splitlines() if line.startswith(SMALL))
    assert re.search(r" \d+(\.\d)? m$", line), line
    simulated = {row["model"]: row for row in fit_json("--list", "--simulate", "no-gpu")["models"]}
    assert simulated[SMALL]["speed"]["source"] == "predicted"

    # The session's rows, as the wizard's Model step shows them.
    with session_on(None) as session:
        rows = {row.repo: row for row in session.model_rows()}
        report = session.fit(session.resolve(SMALL))
        quants = session.quant_rows(report, 0)
    assert rows[SMALL].speed is not None and rows[SMALL].speed.source == "measured"
    assert rows[SMALL].speed_text == speed_text(rows[SMALL].speed)
    assert rows[SMALL].speed_text.endswith(" m") and rows[SMALL].cached
    assert quants[0].speed is not None and quants[0].speed.source == "measured"

    # Plain mode: the model list (its plan's output, measured under it too when another).
    flake = fixture_flake(tmp_path / "flake", "documented")
    with session_on(None, flake=flake) as session:
        planned = session.make_plan().build.output
    if planned != output:
        _bench(f"{SMALL}:Q8_0", llamacpp_bin, planned, before[SMALL].estimate.mode)
    plain = run_piped(["--plain", "--flake", flake], "\n\n2\n", tmp_path)
    menu = re.search(r"\d+\) Qwen3 0\.6B \(small chat\) - Q8_0 [^,]+, (\S+ ?m?) tok/s",
                     plain.stdout)  # fmt: skip
    assert menu, plain.stdout[-3000:]
    assert menu[1].endswith(" m"), menu[0]
