"""Turn what a person names (a .gguf path, an http(s) URL, or `owner/repo[:quant]`) into the
quants to estimate, each with its architecture and weights layout."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from llama_wizard.models.arch import ModelArch, arch_from_metadata
from llama_wizard.models.catalogue import CatalogueModel, load_catalogue
from llama_wizard.models.errors import GgufError, ModelNotFound, QuantNotFound
from llama_wizard.models.gguf_header import GgufHeader, TensorInfo, read_local
from llama_wizard.models.hub import RepoListing, RepoQuant, list_repo, resolve_url
from llama_wizard.models.quant import normalize_quant, quant_tag, shard_names, split_name
from llama_wizard.models.remote import FetchStats, fetch_header
from llama_wizard.models.weights import WeightsLayout, layout_from_size, layout_from_tensors

_REPO = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?::(?P<quant>[\w.-]+))?$")


@dataclass
class Candidate:
    quant: str
    files: list[str]
    file_bytes: int
    arch: ModelArch
    layout: WeightsLayout
    bytes_precision: int = 0
    sources: list[str] = field(default_factory=list)


@dataclass
class ModelSource:
    spec: str
    kind: str  # "catalogue" | "hub" | "url" | "path"
    name: str
    repo: str | None
    arch: ModelArch
    candidates: list[Candidate]
    flags: list[str] = field(default_factory=list)
    revision: str | None = None
    notes: list[str] = field(default_factory=list)
    fetch: FetchStats | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "name": self.name,
            "repo": self.repo,
            "revision": self.revision,
            "flags": self.flags,
            "architecture": self.arch.to_json(),
        }


def _file_type_quant(meta: dict[str, Any]) -> str | None:
    value = meta.get("general.file_type")
    if not isinstance(value, int):
        return None
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _merge(headers: list[GgufHeader]) -> tuple[dict[str, Any], list[TensorInfo]]:
    meta = dict(headers[0].metadata)
    tensors = [t for h in headers for t in h.tensors]
    return meta, tensors


def _candidate(headers: list[GgufHeader], files: list[str], label: str | None) -> Candidate:
    meta, tensors = _merge(headers)
    arch = arch_from_metadata(meta, files[0])
    file_bytes = sum(h.file_bytes or (h.data_offset + h.tensor_bytes) for h in headers)
    layout = layout_from_tensors(arch, tensors, file_bytes)
    quant = label or quant_tag(files[0]) or _file_type_quant(meta) or "?"
    return Candidate(quant, files, file_bytes, arch, layout, sources=files)


def from_path(path: Path, spec: str) -> ModelSource:
    split = split_name(str(path))
    shards = [Path(p) for p in shard_names(str(path))] if split else [path]
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise GgufError(
            f"{path.name} is one of {len(shards)} split files, and {len(missing)} are missing "
            f"(first: {missing[0]}).",
            "Download every -0000N-of-0000M part into the same folder.",
        )
    headers = [read_local(p) for p in shards]
    candidate = _candidate(headers, [str(p) for p in shards], None)
    name = headers[0].metadata.get("general.name") or path.name
    return ModelSource(spec, "path", str(name), None, candidate.arch, [candidate])


def from_url(url: str, spec: str) -> ModelSource:
    split = split_name(url.split("?", 1)[0])
    urls = shard_names(url.split("?", 1)[0]) if split else [url]
    headers = []
    stats = FetchStats()
    for shard in urls:
        header, shard_stats = fetch_header(shard)
        headers.append(header)
        stats.requests += shard_stats.requests
        stats.bytes_received += shard_stats.bytes_received
        stats.urls += shard_stats.urls
    candidate = _candidate(headers, urls, None)
    name = headers[0].metadata.get("general.name") or url.rsplit("/", 1)[-1]
    source = ModelSource(spec, "url", str(name), None, candidate.arch, [candidate])
    source.fetch = stats
    return source


def from_catalogue(model: CatalogueModel, spec: str, quant: str | None) -> ModelSource:
    arch = model.arch()
    quants = model.quants
    if quant:
        chosen = model.quant(quant)
        if chosen is None:
            raise QuantNotFound(
                f"{model.repo} has no {quant} in the catalogue.",
                f"Choose one of: {', '.join(q.quant for q in quants)}.",
            )
        quants = [chosen]
    candidates = []
    for q in quants:
        layout = layout_from_size(arch, q.bytes, q.quant)
        files = [f.path for f in q.files] or [q.split_dir or ""]
        candidates.append(
            Candidate(q.quant, files, q.bytes, arch, layout, q.bytes_precision, list(q.sources))
        )
    return ModelSource(
        spec,
        "catalogue",
        model.name,
        model.repo,
        arch,
        candidates,
        list(model.flags),
        model.revision,
        [model.notes] if model.notes else [],
    )


def _read_repo_quant(listing: RepoListing, entry: RepoQuant, stats: FetchStats) -> Candidate:
    headers = []
    for file in entry.files:
        header, shard_stats = fetch_header(resolve_url(listing.repo, file.path, listing.revision))
        header.file_bytes = header.file_bytes or file.bytes
        headers.append(header)
        stats.requests += shard_stats.requests
        stats.bytes_received += shard_stats.bytes_received
        stats.urls += shard_stats.urls
    return _candidate(headers, [f.path for f in entry.files], entry.quant)


def from_hub(repo: str, spec: str, quant: str | None, read_all: bool = False) -> ModelSource:
    listing = list_repo(repo)
    if not listing.quants:
        raise ModelNotFound(
            f"{repo} has no GGUF model files.",
            "Pick a repository with .gguf files (their names usually end in -GGUF).",
        )
    entries = listing.quants
    if quant:
        chosen = listing.find(quant)
        if chosen is None:
            raise QuantNotFound(
                f"{repo} has no {quant} file.",
                f"Choose one of: {', '.join(q.quant for q in listing.quants)}.",
            )
        entries = [chosen]
    stats = FetchStats()
    # One header gives the architecture; the chosen quant (or, without one, the smallest file)
    # is read exactly, the others are estimated from their sizes unless read_all.
    first = _read_repo_quant(listing, entries[0], stats)
    candidates = [first]
    for entry in entries[1:]:
        if read_all:
            candidates.append(_read_repo_quant(listing, entry, stats))
        else:
            layout = layout_from_size(first.arch, entry.bytes, entry.quant)
            candidates.append(
                Candidate(
                    entry.quant, [f.path for f in entry.files], entry.bytes, first.arch, layout
                )
            )
    notes = [f"incomplete split file {q.first}" for q in entries if not q.complete]
    name = repo.split("/", 1)[1]
    source = ModelSource(
        spec, "hub", name, repo, first.arch, candidates, [], listing.revision, notes
    )
    source.fetch = stats
    return source


def _only_quant(source: ModelSource, quant: str | None) -> ModelSource:
    """A file is one quant: asking for another is an error (never silently this one)."""
    if quant is None or any(normalize_quant(c.quant) == quant for c in source.candidates):
        return source
    raise QuantNotFound(
        f"{source.spec} is {', '.join(c.quant for c in source.candidates)}, not {quant}.",
        "Leave out --quant for a single file, or give the file of that quant.",
    )


def resolve_model(spec: str, quant: str | None = None, read_all: bool = False) -> ModelSource:
    """What `spec` names: a local .gguf, an http(s) URL, or a Hub repo[:quant] (the catalogue
    first, then the Hub)."""
    text = spec.strip()
    quant = normalize_quant(quant) if quant else None
    if text.startswith(("http://", "https://")):
        return _only_quant(from_url(text, spec), quant)
    path = Path(text).expanduser()
    if path.exists() or text.lower().endswith(".gguf") or text.startswith((".", "/", "~")):
        if not path.exists():
            raise ModelNotFound(
                f"No file {path}.", "Check the path, or name a Hub repository as owner/name."
            )
        if path.is_dir():
            raise ModelNotFound(f"{path} is a folder.", "Give the path of the .gguf file in it.")
        return _only_quant(from_path(path, spec), quant)
    match = _REPO.match(text)
    if not match:
        raise ModelNotFound(
            f"{spec!r} is not a .gguf path, a URL, or a Hugging Face repo.",
            "Give a path to a .gguf file, an https:// link to one, or owner/name[:QUANT] "
            "(for example unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF:Q4_K_M).",
        )
    repo = match["repo"]
    tag = normalize_quant(match["quant"]) if match["quant"] else None
    if tag and quant and tag != quant:
        raise QuantNotFound(
            f"Two quants asked for: {tag} (in {spec}) and {quant} (--quant).", "Give only one."
        )
    quant = quant or tag
    model = load_catalogue().find(repo)
    if model is not None:
        return from_catalogue(model, spec, quant)
    return from_hub(repo, spec, quant, read_all)
