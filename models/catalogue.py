"""The curated model catalogue shipped with the package (models/data/catalogue.json)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from llama_wizard.models.arch import ModelArch, arch_from_catalogue
from llama_wizard.models.errors import CatalogueError


@dataclass(frozen=True)
class FileEntry:
    path: str
    bytes: int


@dataclass
class CatalogueQuant:
    quant: str
    bytes: int
    files: list[FileEntry]
    sources: list[str]
    bytes_precision: int = 0
    split_dir: str | None = None


@dataclass
class CatalogueModel:
    repo: str
    name: str
    size_class: str
    flags: list[str]
    architecture: dict[str, Any]
    quants: list[CatalogueQuant]
    sources: list[dict[str, Any]]
    revision: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def arch(self) -> ModelArch:
        return arch_from_catalogue(self.architecture)

    def quant(self, name: str) -> CatalogueQuant | None:
        wanted = name.upper()
        return next((q for q in self.quants if q.quant.upper() == wanted), None)


@dataclass
class Catalogue:
    models: list[CatalogueModel]
    recommended: list[str]

    def find(self, repo: str) -> CatalogueModel | None:
        wanted = repo.strip().lower()
        return next((m for m in self.models if m.repo.lower() == wanted), None)


def _model(entry: dict[str, Any]) -> CatalogueModel:
    quants = [
        CatalogueQuant(
            quant=q["quant"],
            bytes=int(q["bytes"]),
            files=[FileEntry(f["path"], int(f["bytes"])) for f in q.get("files", [])],
            sources=list(q["sources"]),
            bytes_precision=int(q.get("bytes_precision", 0)),
            split_dir=q.get("split_dir"),
        )
        for q in entry["quants"]
    ]
    known = {
        "repo",
        "name",
        "size_class",
        "flags",
        "architecture",
        "quants",
        "sources",
        "revision",
        "notes",
    }
    return CatalogueModel(
        repo=entry["repo"],
        name=entry["name"],
        size_class=entry.get("size_class", ""),
        flags=list(entry.get("flags", [])),
        architecture=dict(entry["architecture"]),
        quants=quants,
        sources=list(entry["sources"]),
        revision=entry.get("revision"),
        notes=entry.get("notes", ""),
        extra={k: v for k, v in entry.items() if k not in known},
    )


@functools.cache
def load_catalogue() -> Catalogue:
    try:
        data = resources.files("llama_wizard.models").joinpath("data/catalogue.json")
        text = data.read_text("utf-8")
        document = json.loads(text)
        return Catalogue(
            models=[_model(entry) for entry in document["models"]],
            recommended=list(document.get("recommended", [])),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CatalogueError(
            f"The model catalogue shipped with llama-wizard cannot be read ({error}).",
            "Reinstall llama-wizard (pip install --force-reinstall llama-wizard).",
        ) from None
