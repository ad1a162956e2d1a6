"""Errors from models/: each says what went wrong and what the person can do about it."""

from __future__ import annotations

from llama_wizard.detect.errors import ActionableError


class ModelError(ActionableError):
    """Raised by models/."""


class SizeError(ModelError):
    """A memory size such as `24GiB` could not be read."""


class GgufError(ModelError):
    """A file is not a GGUF, is truncated, or has a header we cannot read."""


class RemoteError(ModelError):
    """A GGUF over HTTP could not be read (no range support, HTTP error, unreachable)."""


class HubError(ModelError):
    """The Hugging Face Hub could not answer for a repository."""


class HubOffline(HubError):
    """HF_HUB_OFFLINE is set and the model is not in the catalogue."""


class HubUnreachable(HubError):
    """The Hub was not reached (network, DNS, proxy, HF_ENDPOINT)."""


class RepoNotFound(HubError):
    pass


class QuantNotFound(ModelError):
    pass


class ModelNotFound(ModelError):
    """A model spec names nothing we can find: no file, no catalogue entry, no repo."""


class CatalogueError(ModelError):
    """The shipped catalogue data is broken (a packaging bug)."""
