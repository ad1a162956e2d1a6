"""The flow core (tui/session.py) on its own: the rules every face shares, once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llama_wizard.detect.errors import ActionableError
from llama_wizard.models.errors import ModelError
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.session import DoesNotFit, Overrides, WizardSession, machine_fingerprint
from llama_wizard.tui.settings import SettingsStore, settings_path
from tests.nix_fixtures import fixture_flake


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fixture_flake(tmp_path_factory.mktemp("flake"))


@contextmanager
def session_on(
    profile: str | None, flake: str, *, store: bool = True, **overrides: object
) -> Iterator[WizardSession]:
    with open_machine(None, profile) as machine:
        session = WizardSession(
            machine,
            SettingsStore.load() if store else None,
            Overrides(flake=flake, **overrides),  # type: ignore[arg-type]
            timeout=5,
        )
        session.detect()
        yield session


def test_choices_are_kept_per_machine_and_simulated_runs_never_touch_the_real_one(
    flake: str,
) -> None:
    with session_on(None, flake) as real:
        real.make_plan()
        assert real.save() is None
    with session_on("2x-mi50", flake) as mi50:
        plan = mi50.make_plan()
        report = mi50.fit(mi50.resolve(plan.model.repo), plan.model.ctx)
        q5 = next(i for i, e in enumerate(report.quants) if e.quant == "Q5_K_M")
        mi50.accept_model(mi50.choice_at(report, q5))
        mi50.save()
    with session_on("rtx4090", flake) as rtx:
        plan = rtx.make_plan()
        assert plan.model == plan.recommended_model  # not the MI50's Q5_K_M
        assert rtx.choices.quant is None
        rtx.save()
    document = json.loads(settings_path().read_text())
    machines = document["machines"]
    assert set(machines) == {"cpu-only", "simulated:2x-mi50", "simulated:rtx4090"}
    assert machines["cpu-only"]["quant"] is None and machines["cpu-only"]["flake"] == flake


def test_fingerprint_tells_machines_apart_by_their_gpus() -> None:
    with open_machine(None, "2x-mi50") as one, open_machine(None, "rtx4090") as other:
        a, b = one.detect(5), other.detect(5)
    a.simulated = b.simulated = None
    assert machine_fingerprint(a)[0] != machine_fingerprint(b)[0]
    assert machine_fingerprint(a)[0].startswith("gpus:")
    assert machine_fingerprint(a)[1] == "2x AMD Instinct MI60 / MI50"


def test_a_choice_equal_to_the_recommendation_is_saved_as_the_recommendation(flake: str) -> None:
    with session_on("rtx4090", flake) as session:
        plan = session.make_plan()
        recommended = plan.recommended_model
        report = session.fit(session.resolve(recommended.repo), recommended.ctx)
        session.accept_model(session.choice_at(report, session.preselect(report)))
        session.choose_gpus(session.recommended_gpus())
        session.choose_output(plan.build.recommended_output)
        session.save()
    saved = json.loads(settings_path().read_text())["machines"]["simulated:rtx4090"]
    assert (saved["gpus"], saved["output"], saved["model"], saved["quant"], saved["ctx"]) == (
        None, None, None, None, None,
    )  # fmt: skip


def test_a_saved_output_the_flake_lacks_is_dropped_with_a_note(flake: str) -> None:
    with session_on("rtx4090", flake) as session:
        session.choose_output("cuda")
        session.save()
    stored = json.loads(settings_path().read_text())
    stored["machines"]["simulated:rtx4090"]["output"] = "no-such-output"
    settings_path().write_text(json.dumps(stored))
    with session_on("rtx4090", flake) as session:
        plan = session.make_plan()
        assert plan.build.output == "cuda"
        assert session.choices.output is None
        assert any("no-such-output" in note for note in session.take_notes())


def test_an_output_named_on_the_command_line_is_never_dropped(flake: str) -> None:
    with (
        session_on("rtx4090", flake, output="no-such-output") as session,
        pytest.raises(ActionableError, match="no output"),
    ):
        session.make_plan()


def test_another_flake_drops_the_output_chosen_for_the_saved_one(
    flake: str, tmp_path: Path
) -> None:
    with session_on("2x-mi50", flake) as session:
        session.make_plan()
        session.choose_output("rocm")
        session.save()
    other = fixture_flake(tmp_path / "other")
    with session_on("2x-mi50", other) as session:
        assert session.choices.output is None
        assert session.make_plan().build.flake == other


def test_a_choice_that_does_not_fit_needs_confirming(flake: str) -> None:
    with session_on("780m-apu", flake) as session:
        plan = session.make_plan()
        assert plan.model is not None and plan.model.verdict != "no"
        report = session.fit(session.resolve(plan.model.repo), plan.model.ctx)
        preselected = session.preselect(report)
        assert report.quants[preselected].verdict != "no"
        coder = session.fit(session.resolve("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF"), 32768)
        too_big = max(range(len(coder.quants)), key=lambda i: coder.quants[i].file_bytes)
        choice = session.choice_at(coder, too_big)
        assert choice.verdict == "no"
        with pytest.raises(DoesNotFit) as raised:
            session.accept_model(choice)
        assert "does NOT fit" in raised.value.message
        assert plan.model.quant != choice.quant  # nothing changed
        session.accept_model(choice, confirmed=True)
        assert session.plan.model.quant == choice.quant


def test_a_named_quant_that_does_not_fit_stays_named_and_is_flagged(flake: str) -> None:
    with session_on(
        "780m-apu", flake, model="unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF", quant="Q8_0"
    ) as session:
        plan = session.make_plan()
    assert plan.model.quant == "Q8_0" and plan.model.verdict == "no"
    assert "model_does_not_fit" in [w.code for w in plan.warnings]


def test_a_quant_that_does_not_exist_is_an_error_that_lists_those_that_do(flake: str) -> None:
    with (
        session_on("rtx4090", flake, quant="Q9_ZZ") as session,
        pytest.raises(ModelError) as raised,
    ):
        session.make_plan()
    assert "Q9_ZZ" in raised.value.message and "Q4_K_M" in raised.value.fix


def test_a_saved_model_that_no_longer_fits_is_dropped_with_a_note(flake: str) -> None:
    # All on the GPUs (--mode gpu): with part of it in RAM nearly anything runs somewhere.
    coder = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF"
    with session_on("2x-mi50", flake, mode="gpu") as session:
        session.make_plan()
        report = session.fit(session.resolve(coder, "Q5_K_M"), 8192)
        choice = session.choice_at(report, 0)
        assert choice.verdict != "no" and choice.mode == "gpu"  # fits both MI50s (32 GiB)
        session.accept_model(choice)
        session.save()
    with session_on("2x-mi50", flake, mode="gpu") as session:
        session.choose_gpus([0])  # half the memory now: 20 GiB of weights cannot fit 16
        plan = session.make_plan()
        assert plan.model == plan.recommended_model
        assert plan.model is None or (plan.model.repo, plan.model.quant) != (coder, "Q5_K_M")
        assert any("does not fit" in note for note in session.take_notes())


def test_the_plan_warning_and_the_model_table_agree_on_a_cpu_only_machine(flake: str) -> None:
    with session_on(None, flake) as session:
        plan = session.make_plan()
        rows = session.model_rows(session.default_ctx())
    warned = "no_model_fits" in [w.code for w in plan.warnings]
    assert warned == all(row.verdict == "no" for row in rows)
    if plan.model is not None:
        row = next(r for r in rows if r.repo == plan.model.repo)
        assert row.verdict != "no"


def test_core_modules_import_neither_textual_nor_questionary() -> None:
    core = [
        "llama_wizard.tui.session",
        "llama_wizard.tui.ranking",
        "llama_wizard.tui.measurements",
        "llama_wizard.tui.settings",
        "llama_wizard.tui.validate",
        "llama_wizard.tui.steps",
        "llama_wizard.tui.plan",
        "llama_wizard.tui.launch",
        "llama_wizard.tui.commands",
        "llama_wizard.tui.machine",
        "llama_wizard.models.choose",
        "llama_wizard.nix.build",
        "llama_wizard.nix.recommend",
        "llama_wizard.detect.inventory",
    ]
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in core)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'questionary', "
        "'prompt_toolkit'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_llamacpp_is_not_asked_about_a_simulated_machine(flake: str) -> None:
    from llama_wizard.tui.verify import VerifyError

    with session_on("rtx4090", flake) as session:
        session.make_plan()
        with pytest.raises(VerifyError, match="simulated"):
            session.verify()
