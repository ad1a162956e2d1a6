"""What people read (issue 12, "Safe defaults and wording"): messages say the fact, not a
document people do not have; `code` spans render by one rule in each face; bullets wrap with a
hanging indent; sizes are GiB; a truncated GGUF says so without numpy's words; the commands
file has one default and is never overwritten unasked."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from llama_wizard.detect.model import DetectionWarning
from llama_wizard.models.errors import GgufError
from llama_wizard.models.gguf_header import read_local
from llama_wizard.models.source import resolve_model
from llama_wizard.screens.base import error_text, message_markup
from llama_wizard.tui.format import code_spans, item, plain_text
from llama_wizard.tui.machine import open_machine
from llama_wizard.tui.plain import PlainWizard
from llama_wizard.tui.render import bullets, warning_panel
from llama_wizard.tui.session import COMMANDS_FILE_NAME, Overrides, WizardSession
from tests.gguf_factory import write_gguf
from tests.nix_fixtures import fixture_flake
from tests.plain_helpers import line_prompter

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("detect", "nix", "models", "tui", "screens")
# A document of this repository cited to the person (they do not have it), as a file name, a
# section sign or a numbered pitfall.
CITATION = re.compile(r"\.md\b|§|\bpitfalls? \d|\bsections? \d")
# A memory size in decimal units (llama.cpp and the wizard say GiB/MiB).
DECIMAL_SIZE = re.compile(r"\d\s?[GMT]B\b(?!/s)")


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def user_strings() -> list[tuple[str, str]]:
    """(where, text) of every string literal of the packages that is not a docstring (comments
    are not strings), and of the data files' fields people read (profile titles and
    descriptions, model names and notes)."""
    strings = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            docstrings = _docstrings(tree)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    strings.append((f"{path.relative_to(REPO)}:{node.lineno}", node.value))
    for path in sorted((REPO / "detect" / "profiles").glob("*.json")):
        profile = json.loads(path.read_text())
        strings += [(f"{path.name} {key}", profile[key]) for key in ("description",)]
    catalogue = json.loads((REPO / "models" / "data" / "catalogue.json").read_text())
    for model in catalogue["models"]:
        strings += [(f"catalogue {model['repo']} {k}", model[k]) for k in ("name", "notes")
                    if model.get(k)]  # fmt: skip
    return strings


def test_no_message_cites_a_document_people_do_not_have() -> None:
    cited = [f"{where}: {text[:100]!r}" for where, text in user_strings() if CITATION.search(text)]
    assert cited == []


def test_sizes_people_read_are_binary() -> None:
    decimal = [
        f"{where}: {text[:100]!r}"
        for where, text in user_strings()
        # What people may type (models/sizes.py parses 24GB too, and says so) and GPU product
        # names keep GB.
        if DECIMAL_SIZE.search(text)
        and "24GB" not in text
        and not where.startswith(("models/sizes.py", "detect/names"))
    ]
    assert decimal == []


def test_every_profile_has_a_one_line_description() -> None:
    for path in sorted((REPO / "detect" / "profiles").glob("*.json")):
        description = json.loads(path.read_text()).get("description")
        assert isinstance(description, str) and description.strip(), path.name
        assert "\n" not in description and len(description) <= 55, path.name


# --- code spans and bullets ----------------------------------------------------------------------


def test_code_spans_render_by_one_rule_in_each_face() -> None:
    message = "Run `sudo usermod -aG render $USER`, then `llama-wizard detect` [again]."
    assert code_spans(message) == [
        ("Run ", False), ("sudo usermod -aG render $USER", True), (", then ", False),
        ("llama-wizard detect", True), (" [again].", False),
    ]  # fmt: skip
    # Plain text: quotes, which still say where a command ends.
    assert plain_text(message) == "Run 'sudo usermod -aG render $USER', then 'llama-wizard " \
        "detect' [again]."  # fmt: skip
    assert plain_text("use `--flake 'path:.'`") == "use \"--flake 'path:.'\""
    assert plain_text("a lone ` stays") == "a lone ` stays"
    # Textual markup: bold spans; the rest (brackets included) exactly as written.
    from textual.content import Content

    content = Content.from_markup(message_markup(message))
    assert content.plain == message.replace("`", "")
    bold = [content.plain[s.start : s.end] for s in content.spans if str(s.style) in "b bold"]
    assert bold == ["sudo usermod -aG render $USER", "llama-wizard detect"]

    class Error:
        message = "`x` failed"
        fix = "Run `y`."

    assert error_text(Error()) == "⚠ 'x' failed\nFix: Run 'y'."


def test_rich_output_styles_code_on_a_terminal_and_quotes_it_elsewhere() -> None:
    warning = DetectionWarning(
        "kfd", "Cannot open `/dev/kfd`.", "Run `sudo usermod -aG render $USER`."
    )
    terminal = Console(width=80, force_terminal=True, color_system="standard")
    with terminal.capture() as captured:
        terminal.print(warning_panel(warning))
    styled = captured.get()
    assert "`" not in styled and "\x1b[1m/dev/kfd" in styled
    piped = Console(width=80, force_terminal=False)
    with piped.capture() as captured:
        piped.print(warning_panel(warning))
    text = captured.get()
    assert "'/dev/kfd'" in text and "'sudo usermod -aG render $USER'" in text and "`" not in text


def test_bullet_continuation_lines_hang_under_the_text() -> None:
    reason = ("HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES are unset because HIP re-indexes "
              "them after ROCR's mask and reads CUDA's too; see `rocminfo`.")  # fmt: skip
    # Plain mode.
    lines = item(reason, width=60).splitlines()
    assert len(lines) > 1 and lines[0].startswith("  • ")
    assert all(line.startswith("    ") and not line.startswith("     ") for line in lines[1:])
    assert all(len(line) < 60 for line in lines)
    assert " ".join(line.strip() for line in lines).removeprefix("• ") == plain_text(reason)
    assert item("a\nb", "note: ") == "note: a\n      b"  # a line break in the message stays
    assert item(reason, "fix: ") == "fix: " + plain_text(reason)  # not a terminal: no wrapping
    # Rich (the CLI's plan, plain mode's tables).
    console = Console(width=60, force_terminal=False)
    with console.capture() as captured:
        console.print(bullets([reason, "short"]))
    shown = [line.rstrip() for line in captured.get().splitlines()]
    assert shown[0].startswith("  • HIP_VISIBLE_DEVICES")
    assert all(line.startswith("    ") for line in shown[1:-1])
    assert shown[-1] == "  • short"


# --- a truncated GGUF ----------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.999, 2000, 100, 30])
def test_a_truncated_gguf_says_so_without_numpy(tmp_path: Path, keep: float) -> None:
    whole = write_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    size = int(len(whole) * keep) if keep < 1 else int(keep)
    cut.write_bytes(whole[:size])
    for read in (read_local, lambda path: resolve_model(str(path))):
        with pytest.raises(GgufError) as error:
            read(cut)
        message = error.value.message
        assert f"{cut} is truncated, not a complete GGUF file" in message
        assert f"{size} bytes" in message
        if keep in (0.5, 0.999):  # the header is there: what a complete file has is known
            assert f"its tensors need 33.0 MiB ({len(whole)} bytes)" in message
        else:
            assert "ends inside its header" in message
        for numpy_words in ("array", "reshape", "dtype", "mmap", "buffer"):
            assert numpy_words not in message.lower()
        assert "download" in error.value.fix


# --- the commands file ---------------------------------------------------------------------------


def test_the_commands_file_defaults_to_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert WizardSession.default_commands_path() == tmp_path / COMMANDS_FILE_NAME
    # A directory that cannot be written (/, a read-only checkout), or is gone: the data
    # directory, which saving creates.
    data = Path(os.environ["XDG_DATA_HOME"]) / "llama-wizard" / COMMANDS_FILE_NAME
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert WizardSession.default_commands_path() == data
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    monkeypatch.chdir(locked)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere
            assert WizardSession.default_commands_path() == data
    finally:
        locked.chmod(0o755)


def test_plain_mode_asks_before_replacing_the_commands_file(tmp_path: Path, monkeypatch) -> None:
    flake = fixture_flake(tmp_path / "flake", "documented")
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / COMMANDS_FILE_NAME
    existing.write_text("mine\n")
    # Save to the default (Enter), refuse to replace; again, and agree.
    prompter, out, prompts = line_prompter("", "n", "", "y")
    with open_machine(None, "2x-mi50") as machine:
        session = WizardSession(machine, None, Overrides(flake=flake))
        session.make_plan()
        wizard = PlainWizard(session, prompter, out=out, err=out)
        wizard.save_commands()
        assert existing.read_text() == "mine\n"
        wizard.save_commands()
    text = out.getvalue()
    assert prompts[0] == f"Save to [{existing}]: "
    assert f"{existing} already exists." in prompts[1] and "Replace it?" in prompts[1]
    assert "Not saved." in text and f"saved to {existing}" in text
    assert existing.read_text().startswith("# llama-wizard: the commands")
