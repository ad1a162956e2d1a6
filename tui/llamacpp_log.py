"""What llama.cpp prints, read line by line, across versions (no UI, no printing).

Timing lines (`parse_timing`), each giving prompt or generation speed:

- llama-completion / llama-cli today (common_log, timestamped; `-lv`/`--log-colors` may add ANSI
  colours, `--log-jsonl` wraps each line as `{"type":"log",...,"msg":"..."}`):
  `0.01.726.401 I common_perf_print: prompt eval time =  175.71 ms /  23 tokens (  7.64 ms per
  token,  130.90 tokens per second)` and `... common_perf_print:        eval time = ... runs ...`
- mid-2024 to early 2026 builds: `llama_perf_context_print: prompt eval time = ...`
- 2023 to mid-2024 builds: `llama_print_timings: prompt eval time = ...`
- llama-server today, one line per value:
  `1.02.003.004 I slot print_timing: id  3 | task 0 | prompt eval time = ...` and
  `... | task 0 |        eval time = ... tokens ...`
- llama-server late 2024 to 2025: a `slot print_timing: id  0 | task 0 |` header, then bare
  `prompt eval time = ...` / `       eval time = ...` lines (sometimes behind a `[pid]` prefix
  added by a supervisor such as llama-swap)
- llama-server 2024: `INFO [           print_timings] prompt eval time     = ... | tid=...` and
  `generation eval time = ... runs ...`, or the same as JSON (`{"msg":"prompt eval time = ..."}`)

Readiness lines (`is_listening`), giving the URL:

- today: `0.00.512.345 I srv  llama_server: listening on http://127.0.0.1:18099` (also
  `unix:///path.sock` for a socket host)
- late 2024 to 2025: `main: server is listening on http://127.0.0.1:8080 - starting the main loop`
- 2024: `INFO [                    main] HTTP server listening | tid="..." timestamp=...
  n_threads_http="..." port="8080" hostname="127.0.0.1"`
- late 2023 to early 2024: `llama server listening at http://127.0.0.1:8080` on stdout, and on
  stderr `{"timestamp":...,"level":"INFO","function":"main",...,"message":"HTTP server
  listening","hostname":"127.0.0.1","port":"8080"}` (later `"msg"` instead of `"message"`)

tests/fixtures/llamacpp/ holds a recorded real log of each form (README.md says where each came
from); tests/test_llamacpp_log.py reads them all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "TimingLine",
    "is_listening",
    "parse_timing",
    "speeds",
    "split_prefix",
]

# ESC [ ... m colour sequences (common_log with --log-colors on, or a terminal-forced build).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A supervisor's "[pid] " prefix (llama-swap and similar), then common_log's
# "M.SS.mmm.uuu L " timestamp and level.
_PID = re.compile(r"^\[\d+\]\s+")
_STAMP = re.compile(r"^(?P<stamp>\d+\.\d{2}\.\d{3}\.\d{3})\s+(?P<level>[IWED])\s")

_NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan)"
_TIMING_BODY = re.compile(
    r"(?P<label>prompt eval time|generation eval time|eval time)\s*=\s*"
    rf"(?P<ms>{_NUM})\s*ms\s*/\s*(?P<count>\d+)\s*(?:tokens|runs)\s*"
    rf"\(\s*(?P<per_token>{_NUM})\s*ms per token\s*,\s*(?P<rate>{_NUM})\s*tokens per second\s*\)",
    re.IGNORECASE,
)
_TIMING_PREFIX = re.compile(
    r"^\s*(?:"
    r"(?P<func>common_perf_print|llama_perf_context_print|llama_print_timings)\s*:"
    r"|slot\s+print_timing:\s*id\s+(?P<slot>\d+)\s*\|\s*task\s+(?P<task>-?\d+)\s*\|"
    r"|INFO\s+\[\s*print_timings\s*\]"
    r"|"  # nothing: the bare lines of the server's multi-line form
    r")\s*"
)

_LISTENING_ON = re.compile(
    r"(?:^|:\s|server is\s)listening on\s+(?P<url>(?:https?|unix)://[^\s,]+?)[.,;]?(?:\s|$)"
)
_LISTENING_AT = re.compile(r"llama server listening at\s+(?P<url>https?://[^\s,]+?)[.,;]?(?:\s|$)")
_HTTP_LISTENING = re.compile(r"\bHTTP server listening\b")
_KV_HOST = re.compile(r"\bhostname=\"?(?P<v>[^\"\s|]+)\"?")
_KV_PORT = re.compile(r"\bport=\"?(?P<v>\d+)\"?")
_KV_SLOT = re.compile(r"\bid_slot=\"?(?P<v>-?\d+)")
_KV_TASK = re.compile(r"\bid_task=\"?(?P<v>-?\d+)")


@dataclass(frozen=True)
class TimingLine:
    """One prompt-processing or generation timing line."""

    kind: Literal["prompt", "generation"]
    ms: float
    tokens: int
    tokens_per_second: float | None  # None when llama.cpp printed inf / nan (no tokens)
    source: str  # common_perf_print, llama_perf_context_print, llama_print_timings, server
    slot: int | None = None  # llama-server's slot and task, when the line names them
    task: int | None = None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(line: str) -> str:
    """A line of the program's output that is safe to draw inside a screen: colour codes
    dropped, any other control character (a model's random bytes can hold ESC, CR, BEL) shown
    as U+FFFD, so it can never move the cursor or clear the wizard's screen."""
    return _CONTROL.sub("\ufffd", _ANSI.sub("", line))


def split_prefix(line: str) -> tuple[str | None, str | None, str]:
    """(timestamp, level letter, message) of a common_log line; ANSI colours, a trailing
    newline and a supervisor's `[pid]` prefix are dropped. A line without a timestamp gives
    (None, None, message)."""
    text = _ANSI.sub("", line).rstrip("\r\n")
    text = _PID.sub("", text, count=1)
    match = _STAMP.match(text)
    if match:
        return match["stamp"], match["level"], text[match.end() :]
    return None, None, text


def _json_message(text: str) -> tuple[str, dict[str, Any]] | None:
    """(message, object) for a JSON log line (the 2023-24 server, --log-jsonl), else None."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        obj = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    message = obj.get("msg", obj.get("message"))
    return (message.rstrip("\n") if isinstance(message, str) else ""), obj


def _search(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match["v"] if match else None


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_timing(line: str) -> TimingLine | None:
    """The prompt or generation timing on `line`, or None if it is not one of llama.cpp's
    timing lines (load, sample, total and graph lines are not)."""
    _stamp, _level, text = split_prefix(line)
    decoded = _json_message(text)
    fields: dict[str, Any] = {}
    if decoded is not None:
        text, fields = decoded
    prefix = _TIMING_PREFIX.match(text)
    if prefix is None:  # pragma: no cover - the bare alternative always matches
        return None
    body = _TIMING_BODY.match(text, prefix.end())
    if body is None:
        return None
    rest = text[body.end() :].strip()
    if rest and not rest.startswith("|"):  # the old server appends "| tid=... timestamp=..."
        return None
    label = body["label"].lower()
    kind: Literal["prompt", "generation"] = "prompt" if label.startswith("prompt") else "generation"
    # Without a function name it is llama-server's (slot print_timing, its bare lines, the
    # 2024 print_timings forms).
    source = prefix["func"] or "server"
    ms = _number(body["ms"])
    slot, task = prefix["slot"], prefix["task"]
    if slot is None:  # the 2024 server: id_slot / id_task as JSON fields or after "|"
        slot = fields.get("id_slot", _search(_KV_SLOT, rest))
        task = fields.get("id_task", _search(_KV_TASK, rest))
    return TimingLine(
        kind=kind,
        ms=ms if ms is not None else math.nan,
        tokens=int(body["count"]),
        tokens_per_second=_number(body["rate"]),
        source=source,
        slot=_int(slot),
        task=_int(task),
    )


def _url(host: str, port: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def is_listening(line: str) -> str | None:
    """The URL llama-server says it is listening on, if `line` is its readiness line.

    Since late 2024 that line comes after the model is loaded (an earlier `main: HTTP server is
    listening, hostname: ..., port: ...` line, printed before loading, is deliberately not one).
    Builds of early 2024 printed theirs before loading the model: there, /health answers 503
    until the model is loaded."""
    _stamp, _level, text = split_prefix(line)
    decoded = _json_message(text)
    if decoded is not None:
        message, obj = decoded
        if _HTTP_LISTENING.search(message) and "port" in obj:
            return _url(str(obj.get("hostname", "127.0.0.1")), str(obj["port"]))
        text = message
    for pattern in (_LISTENING_ON, _LISTENING_AT):
        match = pattern.search(text)
        if match:
            return match["url"]
    if _HTTP_LISTENING.search(text):
        port = _KV_PORT.search(text)
        host = _KV_HOST.search(text)
        if port:
            return _url(host["v"] if host else "127.0.0.1", port["v"])
    return None


def speeds(lines: Iterable[str]) -> tuple[TimingLine | None, TimingLine | None]:
    """The last prompt and the last generation timing among `lines`."""
    prompt = generation = None
    for line in lines:
        timing = parse_timing(line)
        if timing is None:
            continue
        if timing.kind == "prompt":
            prompt = timing
        else:
            generation = timing
    return prompt, generation
