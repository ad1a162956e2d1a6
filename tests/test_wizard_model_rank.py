"""Issue 11 in the wizard's Model step: the list is the session's ranked list (its order, its
badge, best quant, run mode and speed per model), `s` changes the order through the session, a
speed measured on this machine shows as measured, and a machine without a GPU runs on the CPU."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import DataTable, OptionList, Static

from llama_wizard.models.speed import Speed
from llama_wizard.tui.measurements import Measurement, machine_key, record
from llama_wizard.tui.ranking import SORT_KEYS, speed_text
from tests.wizard_helpers import make_app, next_step, settle, wait_for

SMALL = "Qwen/Qwen3-0.6B-GGUF"


async def to_model_step(pilot) -> None:
    await settle(pilot)
    await next_step(pilot)
    await next_step(pilot)
    assert pilot.app.step == "model"
    await wait_for(lambda: pilot.app.screen.fitted)
    await settle(pilot)


def listed(app) -> list[str]:
    models = app.screen.query_one("#models", OptionList)
    return [models.get_option_at_index(i).id for i in range(models.option_count)]


def prompts(app) -> dict[str, str]:
    models = app.screen.query_one("#models", OptionList)
    options = [models.get_option_at_index(i) for i in range(models.option_count)]
    return {o.id: Text(o.prompt).plain if isinstance(o.prompt, str) else o.prompt.plain
            for o in options}  # fmt: skip


def header(app) -> str:
    return str(app.screen.query_one("#models-header", Static).render())


def quant_cells(app) -> dict[str, dict[str, str]]:
    """The quant table as {quant: {column title: cell text}}."""
    table = app.screen.query_one("#quants", DataTable)
    titles = [str(column.label) for column in table.ordered_columns]
    rows = {}
    for index in range(table.row_count):
        cells = table.get_row_at(index)
        texts = [cell.plain if isinstance(cell, Text) else str(cell) for cell in cells]
        rows[texts[0].removesuffix(" *")] = dict(zip(titles, texts, strict=True))
    return rows


async def test_the_list_is_the_sessions_ranked_list_with_mode_and_speed(tmp_path: Path) -> None:
    app = make_app(tmp_path, "rtx4090")
    async with app.run_test(size=(120, 40)) as pilot:
        await to_model_step(pilot)
        rows = app.session.model_rows(app.screen.ctx, "score")
        assert listed(app) == [row.repo for row in rows]
        shown = prompts(app)
        for row in rows:
            words = shown[row.repo].split()
            assert shown[row.repo].startswith(row.name + " ") and row.badge_text in shown[row.repo]
            assert row.best_quant in words and words[-1] == row.speed_text.split()[0]
            assert row.mode_label in shown[row.repo]
        # Some run fully on the 24 GB card, some only with part in RAM: both kinds are there.
        assert {"gpu", "moe-offload"} <= {row.mode for row in rows}
        assert "by score" in header(app)
        # The quant table has a mode and a speed per quant, as the session gives them.
        report = app.screen.report
        quants = quant_cells(app)
        for row in app.session.quant_rows(report, None):
            assert quants[row.quant]["Mode"] == row.mode_label
            expected = row.speed_text if row.estimate.verdict != "no" else "-"
            assert quants[row.quant]["tok/s"] == expected
        await pilot.press("q")


async def test_s_changes_the_order_through_the_session(tmp_path: Path) -> None:
    app = make_app(tmp_path, "rtx4090")
    async with app.run_test(size=(80, 24)) as pilot:
        await to_model_step(pilot)
        ctx = app.screen.ctx
        by_score = listed(app)
        seen = {"score": by_score}
        for sort in SORT_KEYS[1:]:
            await pilot.press("s")
            await settle(pilot)
            assert app.screen.sort == sort and f"by {sort}" in header(app)
            assert listed(app) == [row.repo for row in app.session.model_rows(ctx, sort)]
            seen[sort] = listed(app)
        assert seen["speed"] != by_score and seen["name"] != by_score
        names = {row.repo: row.name.casefold() for row in app.session.model_rows(ctx)}
        assert [names[repo] for repo in seen["name"]] == sorted(names.values())
        await pilot.press("s")  # round to the first order again
        await settle(pilot)
        assert app.screen.sort == "score" and listed(app) == by_score
        await pilot.press("q")


async def test_a_speed_measured_here_shows_as_measured(tmp_path: Path) -> None:
    # The profile as if it were this machine: a simulated one never shows a measurement.
    app = make_app(tmp_path, "rtx4090", simulated=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        session = app.session
        ranked = {row.model: row for row in session.ranked(session.default_ctx())}
        small = ranked[SMALL]
        assert small.speed is not None and small.speed.source == "predicted"
        machine = machine_key(session.plan.inventory)
        assert machine is not None
        measurement = Measurement(
            machine=machine[0], output=session.plan.build.output, model=SMALL,
            quant=small.quant.upper(), ctx=small.report.ctx, mode=small.estimate.mode,
            program="llama-bench", test="pp512/tg128", prompt_tps=2345.0,
            generation_tps=123.0, at=1_700_000_000, machine_label=machine[1],
        )  # fmt: skip
        assert record(measurement)[0] is not None
        await next_step(pilot)
        await wait_for(lambda: app.screen.fitted)
        await settle(pilot)
        cell = speed_text(Speed(2345.0, 123.0, "measured", ""))
        assert cell == "123 m"
        shown = prompts(app)
        assert shown[SMALL].rstrip().endswith(cell), shown[SMALL]
        others = [text for repo, text in shown.items() if repo != SMALL]
        assert all(not text.rstrip().endswith(" m") for text in others)
        # Its quant table says so too.
        models = app.screen.query_one("#models", OptionList)
        models.focus()
        models.highlighted = models.get_option_index(SMALL)
        models.action_select()
        await settle(pilot)
        await wait_for(lambda: app.screen.report is not None and app.screen.report.source.name
                       == small.name)  # fmt: skip
        assert quant_cells(app)[small.quant]["tok/s"] == cell
        await pilot.press("q")


async def test_without_a_gpu_everything_runs_on_the_cpu(tmp_path: Path) -> None:
    app = make_app(tmp_path, "no-gpu")
    async with app.run_test(size=(80, 24)) as pilot:
        await to_model_step(pilot)
        rows = app.session.model_rows(app.screen.ctx)
        running = [row for row in rows if row.best_quant is not None]
        assert running and all(row.mode == "cpu" for row in running)
        shown = prompts(app)
        for row in running:
            assert " CPU " in shown[row.repo] and row.speed_text.startswith("~"), shown[row.repo]
        quants = quant_cells(app)
        assert quants and all(cells["Mode"] == "CPU" for cells in quants.values())
        await pilot.press("q")
