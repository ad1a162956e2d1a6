"""The layers of DESIGN.md, checked on the source: detect/ is the lowest (nix/ and models/ build
on it), models/ knows nothing of Nix, and no library imports a face (tui/, screens/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at the top or inside a function."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
    return modules


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((REPO / package).glob("*.py"))
    assert files, f"no Python files in {package}/"
    return [
        f"{path.relative_to(REPO)}: {module}"
        for path in files
        for module in imported_modules(path)
        if module.startswith(forbidden)
    ]


def test_models_import_nothing_from_nix() -> None:
    assert offending("models", ("llama_wizard.nix",)) == []


def test_detect_is_the_lowest_layer() -> None:
    above = ("llama_wizard.nix", "llama_wizard.models", "llama_wizard.tui", "llama_wizard.screens")
    assert offending("detect", above) == []


@pytest.mark.parametrize("package", ["detect", "nix", "models"])
def test_libraries_import_no_face(package: str) -> None:
    faces = ("llama_wizard.tui", "llama_wizard.screens", "textual", "questionary", "rich")
    assert offending(package, faces) == []
