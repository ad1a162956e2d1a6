"""Hugging Face Hub listings: a repository's GGUF files and sizes, split files grouped, the quant
tag read from each name. Uses huggingface_hub, which honours HF_TOKEN and HF_ENDPOINT."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import quote

from llama_wizard.models.errors import HubError, HubOffline, HubUnreachable, RepoNotFound
from llama_wizard.models.quant import is_model_file, quant_tag, split_name
from llama_wizard.models.remote import _network_error, hub_endpoint

TIMEOUT = 20.0


@dataclass
class GgufFile:
    path: str
    bytes: int


@dataclass
class RepoQuant:
    """One model file of a repository: a single GGUF or all shards of a split one."""

    quant: str
    files: list[GgufFile]
    complete: bool = True

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def first(self) -> str:
        return self.files[0].path


@dataclass
class RepoListing:
    repo: str
    revision: str
    quants: list[RepoQuant]
    projectors: list[GgufFile] = field(default_factory=list)

    def find(self, quant: str) -> RepoQuant | None:
        wanted = quant.upper()
        return next((q for q in self.quants if q.quant.upper() == wanted), None)


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_url(repo: str, path: str, revision: str = "main") -> str:
    return f"{hub_endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


def group_files(paths: list[tuple[str, int]]) -> tuple[list[RepoQuant], list[GgufFile]]:
    """Model GGUFs grouped by file (shards -00001-of-0000N together, in order), with the quant tag
    from the name; projectors (mmproj) apart."""
    singles: list[RepoQuant] = []
    splits: dict[tuple[str, int], dict[int, GgufFile]] = {}
    projectors = []
    for path, size in sorted(paths):
        if not path.lower().endswith(".gguf"):
            continue
        if not is_model_file(path):
            if "mmproj" in path.lower():
                projectors.append(GgufFile(path, size))
            continue
        split = split_name(path)
        if split is None:
            singles.append(RepoQuant(quant_tag(path) or _stem(path), [GgufFile(path, size)]))
        else:
            splits.setdefault((split.prefix, split.count), {})[split.index] = GgufFile(path, size)
    for (prefix, count), parts in splits.items():
        files = [parts[i] for i in sorted(parts)]
        complete = sorted(parts) == list(range(1, count + 1))
        singles.append(RepoQuant(quant_tag(files[0].path) or _stem(prefix), files, complete))
    singles.sort(key=lambda q: q.bytes)
    # Two files with one tag (a 128K variant beside the plain one): tell them apart by name.
    seen: dict[str, int] = {}
    for q in singles:
        seen[q.quant.upper()] = seen.get(q.quant.upper(), 0) + 1
    for q in singles:
        if seen[q.quant.upper()] > 1:
            q.quant = _stem(split_name(q.first).prefix if split_name(q.first) else q.first)
    return singles, projectors


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[:-5] if name.lower().endswith(".gguf") else name


def list_repo(repo: str, revision: str | None = None) -> RepoListing:
    """The GGUF files of a Hub repository (one model_info call with file metadata)."""
    if offline():
        raise HubOffline(
            f"HF_HUB_OFFLINE is set, so the Hugging Face Hub was not asked about {repo}.",
            "Unset HF_HUB_OFFLINE to look it up, pick a model from the catalogue "
            "(`llama-wizard fit --list`), or give the path of a downloaded .gguf.",
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hub_endpoint()
    try:
        info = HfApi(endpoint=endpoint).model_info(
            repo, revision=revision, files_metadata=True, timeout=TIMEOUT
        )
    except GatedRepoError:
        raise HubError(
            f"{repo} is gated: the Hub wants you to accept its terms first.",
            f"Accept them on {endpoint}/{repo} and set HF_TOKEN to a token with read access.",
        ) from None
    except RevisionNotFoundError:
        raise RepoNotFound(
            f"{repo} has no revision {revision!r}.", "Check the revision (branch or commit)."
        ) from None
    except RepositoryNotFoundError:
        raise RepoNotFound(
            f"No repository {repo} on {endpoint}.",
            "Check the spelling (owner/name, as in the model page's URL). A private "
            "repository needs HF_TOKEN set to a token that may read it.",
        ) from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "?")
        raise HubError(
            f"The Hub answered HTTP {status} for {repo}.",
            "Try again later; if it persists, check HF_ENDPOINT and HF_TOKEN.",
        ) from None
    except Exception as error:
        if _network_error(error):
            raise HubUnreachable(
                f"The Hugging Face Hub ({endpoint}) was not reached: {error}.",
                "Check the network (or HF_ENDPOINT / a proxy). Offline, the catalogue's models "
                "still work (`llama-wizard fit --list`), and so does a local .gguf path.",
            ) from None
        raise
    files = [(s.rfilename, int(s.size or 0)) for s in (info.siblings or [])]
    quants, projectors = group_files(files)
    return RepoListing(repo, info.sha or revision or "main", quants, projectors)
