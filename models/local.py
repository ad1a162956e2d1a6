"""GGUF files already on this machine: llama.cpp's download cache and the Hugging Face cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from llama_wizard.models.quant import is_model_file, quant_tag, split_name


@dataclass
class LocalModel:
    path: Path
    bytes: int
    quant: str | None
    repo: str | None
    cache: str
    shards: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "quant": self.quant,
            "repo": self.repo,
            "cache": self.cache,
            "shards": [str(s) for s in self.shards],
        }


def llama_cache_dir(env: dict[str, str] | None = None) -> Path:
    """llama.cpp's cache: $LLAMA_CACHE, else $XDG_CACHE_HOME/llama.cpp, else ~/.cache/llama.cpp."""
    env = dict(os.environ) if env is None else env
    if env.get("LLAMA_CACHE"):
        return Path(env["LLAMA_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "llama.cpp"


def hf_cache_dir(env: dict[str, str] | None = None) -> Path:
    """huggingface_hub's cache: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub,
    $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub (in that order)."""
    env = dict(os.environ) if env is None else env
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "huggingface" / "hub"


def _repo_from_hub_path(path: Path, root: Path) -> str | None:
    """models--owner--name/snapshots/<commit>/file.gguf -> owner/name."""
    try:
        top = path.relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None
    if top.startswith("models--"):
        return top[len("models--") :].replace("--", "/", 1)
    return None


def _scan(root: Path, cache: str) -> list[LocalModel]:
    if not root.is_dir():
        return []
    found: dict[str, LocalModel] = {}
    for path in sorted(root.rglob("*.gguf")):
        if "blobs" in path.relative_to(root).parts or not is_model_file(path.name):
            continue
        if path.name.endswith((".downloadInProgress", ".incomplete")):
            continue
        try:
            size = path.stat().st_size  # follows the snapshot symlink to the blob
        except OSError:
            continue  # a dangling link: the blob was pruned
        repo = _repo_from_hub_path(path, root)
        split = split_name(str(path))
        key = split.prefix if split else str(path)
        entry = found.get(key)
        if entry is None:
            first = Path(f"{split.prefix}-00001-of-{split.count:05d}.gguf") if split else path
            entry = LocalModel(first, 0, quant_tag(path.name), repo, cache)
            found[key] = entry
        entry.bytes += size
        entry.shards.append(path)
    return list(found.values())


def find_local_models(env: dict[str, str] | None = None) -> list[LocalModel]:
    """GGUF model files in llama.cpp's cache (flat files of older builds, or the Hub layout of
    newer ones) and in the Hugging Face cache, largest first, each split model once."""
    roots = [(llama_cache_dir(env), "llama.cpp"), (hf_cache_dir(env), "huggingface")]
    models: list[LocalModel] = []
    seen: set[Path] = set()
    for root, cache in roots:
        resolved = root.resolve() if root.exists() else root
        if resolved in seen:
            continue
        seen.add(resolved)
        models.extend(_scan(root, cache))
    models.sort(key=lambda m: (-m.bytes, str(m.path)))
    return models
