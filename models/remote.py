"""Read a GGUF header over HTTP with range requests: only the header, never the tensor data.

The first request asks for the first FIRST_RANGE bytes; while the header does not parse, the next
request fetches only the bytes after those already held, up to GROWTH times as far (or as far as
the parser says it needs). So a header of H bytes costs at most ceil(log4(H / 1 MiB)) + 1 requests
and under 4 H bytes, and never more than MAX_HEADER_BYTES. A server that ignores Range (200 with
the whole file) is stopped after its status line, not read to the end.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llama_wizard.models.errors import GgufError, RemoteError
from llama_wizard.models.gguf_header import GgufHeader, NeedMoreBytes, parse_header

FIRST_RANGE = 1 << 20
GROWTH = 4
MAX_HEADER_BYTES = 64 << 20
TIMEOUT = 30.0
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass
class FetchStats:
    requests: int = 0
    bytes_received: int = 0
    urls: list[str] = field(default_factory=list)


def _session() -> Any:
    from huggingface_hub.utils import get_session

    return get_session()


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _headers_for(url: str) -> dict[str, str]:
    """The Hub's auth header (HF_TOKEN or a saved login) only for the Hub's own host: a token
    never goes to another server. httpx drops it on a redirect to another host (the CDN)."""
    if urlsplit(url).netloc == urlsplit(hub_endpoint()).netloc:
        from huggingface_hub.utils import build_hf_headers

        return dict(build_hf_headers())
    return {"user-agent": "llama-wizard"}


def _safe(url: str) -> str:
    """The URL without query or credentials, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _network_error(error: BaseException) -> bool:
    module = type(error).__module__.split(".")[0]
    return isinstance(error, OSError) or module in {"httpx", "httpx2", "httpcore", "httpcore2"}


def _get_range(url: str, start: int, end: int, stats: FetchStats) -> tuple[bytes, int | None]:
    """Bytes start..end-1 of `url` and the file's total size (from Content-Range)."""
    headers = {
        **_headers_for(url),
        "Range": f"bytes={start}-{end - 1}",
        "Accept-Encoding": "identity",
    }
    stats.requests += 1
    stats.urls.append(_safe(url))
    try:
        with _session().stream(
            "GET", url, headers=headers, follow_redirects=True, timeout=TIMEOUT
        ) as response:
            status = response.status_code
            if status == 200:
                raise RemoteError(
                    f"The server at {_safe(url)} does not support range requests (it answered "
                    "200 with the whole file instead of 206 with a part).",
                    "Download the file and give its path instead, or use a server that supports "
                    "HTTP Range (the Hugging Face Hub does).",
                )
            if status == 416:
                raise GgufError(
                    f"{_safe(url)} is empty or shorter than a GGUF header.",
                    "The file on the server is truncated or not a model: check the URL.",
                )
            if status in (401, 403):
                raise RemoteError(
                    f"{_safe(url)} refused access (HTTP {status}).",
                    "For a gated or private Hugging Face repository accept its terms on the "
                    "model page and set HF_TOKEN to a token with read access.",
                )
            if status == 404:
                raise RemoteError(
                    f"{_safe(url)} was not found (HTTP 404).", "Check the URL or the file name."
                )
            if status != 206:
                raise RemoteError(
                    f"{_safe(url)} answered HTTP {status}.",
                    "Try again later, or download the file and give its path.",
                )
            total = None
            match = _CONTENT_RANGE.search(response.headers.get("content-range", ""))
            if match and match.group(3) != "*":
                total = int(match.group(3))
            chunks = []
            received = 0
            limit = end - start
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                received += len(chunk)
                if received >= limit:
                    break
            stats.bytes_received += received
            return b"".join(chunks)[:limit], total
    except (RemoteError, GgufError):
        raise
    except Exception as error:
        if _network_error(error):
            raise RemoteError(
                f"Could not read {_safe(url)}: {error}.",
                "Check the network connection (and HF_ENDPOINT or a proxy if you use one).",
            ) from None
        raise


def fetch_header(url: str, max_bytes: int = MAX_HEADER_BYTES) -> tuple[GgufHeader, FetchStats]:
    """The GGUF header of the file at `url`, read with as few range requests as it takes."""
    stats = FetchStats()
    buffer = b""
    total: int | None = None
    want = FIRST_RANGE
    while True:
        if total is not None:
            want = min(want, total)
        if len(buffer) < want:
            data, size = _get_range(url, len(buffer), want, stats)
            total = size if size is not None else total
            buffer += data
            if not data:
                total = len(buffer)
        try:
            header = parse_header(buffer, what=_safe(url))
            header.file_bytes = total
            header.sources = [_safe(url)]
            return header, stats
        except NeedMoreBytes as need:
            if total is not None and need.needed > total:
                raise GgufError(
                    f"{_safe(url)} is truncated: its GGUF header needs at least {need.needed} "
                    f"bytes, the file has {total}.",
                    "The upload is incomplete or the file is not a model: check the URL.",
                ) from None
            if len(buffer) >= max_bytes:
                raise GgufError(
                    f"The GGUF header of {_safe(url)} is larger than {max_bytes >> 20} MiB.",
                    "That is not a usual model file; download it and give its path instead.",
                ) from None
            want = min(max(len(buffer) * GROWTH, need.needed), max_bytes)
