"""The first request to a llama-server that has just come up: one short chat completion, so the
person sees that it answers, what it says and how fast (no UI, no printing).

`first_request(url, api_key)` POSTs to `URL/v1/chat/completions` (not streamed: the answer is a
handful of tokens) and returns a `FirstAnswer` built from llama-server's reply: the message's
text, and its `timings` object (`prompt_per_second`, `predicted_per_second`, `predicted_n`,
`predicted_ms`; other servers without `timings` give `usage.completion_tokens` and the
wall-clock time). Whatever goes wrong raises `FirstRequestError` with what the server said
(llama-server's `{"error": {"message": ...}}`, else the HTTP status, else the connection error)
and what to do, including the curl command that asks the same by hand.

`FirstRequest` runs it on a daemon thread for a face that must keep reading the server's log and
answering Ctrl-C (`run --server`, plain mode): the face polls it, and abandons it when the
server stops (the stopped server closes the connection, so the thread ends soon after).

The speed is not recorded here: llama-server prints its own timing lines for this request, which
the launch already reads and records when the server stops (session.record_timing), so a record
here would count the same request twice.

The key (when llama-server requires one, tui/apikey.py) is sent as `Authorization: Bearer KEY`
and never appears in a message, an exception or the shown curl command (which refers to
$LLAMA_API_KEY).
"""

from __future__ import annotations

import json
import shlex
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_wizard.detect.errors import ActionableError

if TYPE_CHECKING:
    from llama_wizard.tui.launch import LaunchSpec

PROMPT = "Say hello in five words."
MAX_TOKENS = 32
TIMEOUT = 120.0  # seconds for the whole request: a large model on a CPU is slow
LOADING_POLL = 0.5  # between tries while the server still loads the model (503)
SHOWN_CHARACTERS = 160  # of the answer, on one line
KEY_VARIABLE = "LLAMA_API_KEY"


class FirstRequestError(ActionableError):
    """The first request got no answer: what the server (or the connection) said, and what to
    do. `status` is the HTTP status when the server answered with an error."""

    def __init__(self, message: str, fix: str, status: int | None = None) -> None:
        super().__init__(message, fix)
        self.status = status

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "fix": self.fix, "status": self.status}


@dataclass(frozen=True)
class FirstAnswer:
    """What llama-server answered: the text, llama-server's own speeds (None when it gave none),
    the tokens it generated and how long the request took (seconds, wall clock)."""

    text: str
    prompt_tps: float | None
    generation_tps: float | None
    tokens: int
    seconds: float

    def shown_text(self) -> str:
        """The text on one line, safe to draw and to print: control characters (a model's random
        bytes) shown as U+FFFD, whitespace runs as one space, backticks (which every face reads
        as a code span) as quotes, cut at SHOWN_CHARACTERS."""
        from llama_wizard.tui.llamacpp_log import printable

        flat = " ".join(printable(self.text.replace("\n", " ").replace("\t", " ")).split())
        flat = flat.replace("`", "'")
        if len(flat) > SHOWN_CHARACTERS:
            flat = flat[: SHOWN_CHARACTERS - 1].rstrip() + "…"
        return flat or "(no text)"

    def summary(self) -> str:
        """'First answer: "Hello there…" (25 tokens, 8.5 tokens/s; prompt 85.1 tokens/s)', as
        every face shows it."""
        figures = [f"{self.tokens} tokens"]
        if self.generation_tps is not None:
            figures.append(f"{self.generation_tps:.1f} tokens/s")
        else:
            figures.append(f"{self.seconds:.1f} s")
        speed = ", ".join(figures)
        if self.prompt_tps is not None:
            speed += f"; prompt {self.prompt_tps:.1f} tokens/s"
        return f'First answer: "{self.shown_text()}" ({speed})'

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prompt_tps": self.prompt_tps,
            "generation_tps": self.generation_tps,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
        }


def chat_url(url: str) -> str:
    """llama-server's OpenAI-style chat endpoint under its base URL."""
    return url.rstrip("/") + "/v1/chat/completions"


def request_body(prompt: str = PROMPT, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    # enable_thinking off: a thinking model (Qwen3) would spend every token on its reasoning
    # and leave the answer empty; templates without the switch ignore it.
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": False,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def curl_command(url: str, api_key: bool, prompt: str = PROMPT) -> str:
    """The same request by hand; the key as a reference to $LLAMA_API_KEY, never its value."""
    argv = ["curl", "-sS", chat_url(url), "-H", "Content-Type: application/json"]
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS})
    words = shlex.join([*argv, "-d", body])
    if api_key:
        words += f' -H "Authorization: Bearer ${KEY_VARIABLE}"'
    return words


def request_key(args: Sequence[str], environment: Mapping[str, str]) -> str | None:
    """The key llama-server requires, as it reads it: `--api-key K[,K2]` (its first key) on the
    command line, else `--api-key-file FILE`'s first key, else $LLAMA_API_KEY in the
    environment it runs with; None when it requires none."""
    for index, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name not in ("--api-key", "--api-key-file"):
            continue
        if not value and index + 1 < len(args):
            value = args[index + 1]
        if name == "--api-key":
            return value.split(",")[0].strip() or None
        try:
            with open(value, encoding="utf-8") as handle:
                keys = [line.strip() for line in handle if line.strip()]
        except OSError:
            return None  # llama-server itself refuses to start then
        return keys[0] if keys else None
    return environment.get(KEY_VARIABLE) or None


def _server_message(body: bytes) -> str | None:
    """llama-server's `{"error": {"message": ...}}` (or an OpenAI-style `{"error": "..."}`)."""
    try:
        reply = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    return None


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def parse_answer(reply: object, seconds: float) -> FirstAnswer:
    """A FirstAnswer from a chat completion reply; FirstRequestError when it is none."""
    try:
        choice = reply["choices"][0]  # type: ignore[index]
        message = choice["message"]
        text = message.get("content") or message.get("reasoning_content") or ""
        if not isinstance(text, str):
            raise TypeError(text)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise FirstRequestError(
            "llama-server answered the first request, but not with a chat completion "
            f"(the reply starts: {json.dumps(reply)[:200]}).",
            "Is something else listening on that port? Stop it, or choose another port.",
        ) from None
    timings = reply.get("timings") if isinstance(reply, dict) else None
    timings = timings if isinstance(timings, dict) else {}
    usage = reply.get("usage") if isinstance(reply, dict) else None
    usage = usage if isinstance(usage, dict) else {}
    tokens = timings.get("predicted_n", usage.get("completion_tokens", 0))
    return FirstAnswer(
        text=text,
        prompt_tps=_number(timings.get("prompt_per_second")),
        generation_tps=_number(timings.get("predicted_per_second")),
        tokens=tokens if isinstance(tokens, int) else 0,
        seconds=seconds,
    )


def first_request(
    url: str,
    api_key: str | None = None,
    *,
    timeout: float = TIMEOUT,
    prompt: str = PROMPT,
    max_tokens: int = MAX_TOKENS,
    cancelled: Callable[[], bool] | None = None,
) -> FirstAnswer:
    """Ask llama-server at `url` (its base URL, `http://127.0.0.1:8080/`) one short chat
    question and return its answer. While it still loads the model (503, as builds of early 2024
    answer right after their readiness line) it asks again until `timeout`, unless `cancelled()`
    says the face gave up. Raises FirstRequestError with the server's own message."""
    endpoint = chat_url(url)
    data = json.dumps(request_body(prompt, max_tokens)).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    # The server runs on this machine: a proxy from the environment would only get in the way.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    by_hand = curl_command(url, bool(api_key), prompt)
    while True:
        started = time.monotonic()  # of this try: a wait for the model to load is no speed
        left = deadline - started
        request = urllib.request.Request(endpoint, data=data, headers=headers, method="POST")
        try:
            with opener.open(request, timeout=max(left, 0.1)) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = _server_message(error.read() or b"")
            if error.code == 503 and left > LOADING_POLL and not (cancelled and cancelled()):
                time.sleep(LOADING_POLL)  # still loading the model
                continue
            raise _http_error(url, error.code, error.reason, detail, by_hand) from None
        except (urllib.error.URLError, OSError) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            raise _connection_error(url, reason, timeout, by_hand) from None
        seconds = time.monotonic() - started
        try:
            reply = json.loads(body.decode("utf-8", errors="replace"))
        except ValueError:
            raise FirstRequestError(
                f"llama-server at {url} answered the first request with something that is not "
                f"JSON (it starts: {body[:120]!r}).",
                "Is something else listening on that port? Stop it, or choose another port.",
            ) from None
        return parse_answer(reply, seconds)


def _http_error(
    url: str, status: int, reason: str, detail: str | None, by_hand: str
) -> FirstRequestError:
    said = detail or f"HTTP {status} {reason}".strip()
    message = f"llama-server at {url} refused the first request: {said} (HTTP {status})."
    if status == 401:
        fix = (
            "It requires another API key than the one the wizard sent: a key of your own given "
            "with --api-key or --api-key-file wins over the wizard's. Ask it with your key: "
            f"`{by_hand}`"
        )
    elif status == 503:
        fix = f"It is still loading the model or busy: ask again in a moment: `{by_hand}`"
    elif status >= 500:
        fix = (
            "Its log says why (a model that cannot generate, memory it cannot get); try a "
            "smaller context or quant. Ask it again by hand: "
            f"`{by_hand}`"
        )
    else:
        fix = f"Its log says why. Ask it again by hand: `{by_hand}`"
    return FirstRequestError(message, fix, status)


def _connection_error(url: str, reason: object, timeout: float, by_hand: str) -> FirstRequestError:
    if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
        return FirstRequestError(
            f"llama-server at {url} did not answer the first request within {timeout:.0f} s.",
            "It may still be working on it (a large model on a slow machine): its log shows "
            f"when it finishes. Ask it again by hand: `{by_hand}`",
        )
    if isinstance(reason, ConnectionRefusedError):
        said = "nothing listens there (connection refused)"
    else:
        said = str(getattr(reason, "strerror", None) or reason)
    return FirstRequestError(
        f"The first request could not reach llama-server at {url}: {said}.",
        "If llama-server stopped, its last lines say why; if it listens on another address "
        f"or port, ask it there: `{by_hand}`",
    )


class FirstRequest:
    """first_request on a daemon thread, started at once: `poll()` gives the FirstAnswer or the
    FirstRequestError once it is there (None until then, and after `abandon()`)."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = TIMEOUT) -> None:
        self._result: FirstAnswer | FirstRequestError | None = None
        self._abandoned = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(url, api_key, timeout), daemon=True, name="first-request"
        )
        self._thread.start()

    def _run(self, url: str, api_key: str | None, timeout: float) -> None:
        try:
            self._result = first_request(
                url, api_key, timeout=timeout, cancelled=self._abandoned.is_set
            )
        except FirstRequestError as error:
            self._result = error
        except Exception as error:  # a face must hear of it, not lose the thread
            self._result = FirstRequestError(
                f"The first request to llama-server at {url} failed: {error}.",
                f"Ask it by hand: `{curl_command(url, bool(api_key))}`",
            )
        self._done.set()

    def poll(self) -> FirstAnswer | FirstRequestError | None:
        if self._abandoned.is_set() or not self._done.is_set():
            return None
        return self._result

    def wait(self, timeout: float | None = None) -> FirstAnswer | FirstRequestError | None:
        self._done.wait(timeout)
        return self.poll()

    def abandon(self) -> None:
        """The server stopped (or the face no longer cares): no result is handed over."""
        self._abandoned.set()


def ask_server(
    spec: LaunchSpec, url: str, base_env: Mapping[str, str], *, timeout: float = TIMEOUT
) -> FirstRequest:
    """The first request to the llama-server `spec` started (with `base_env` beneath its own
    environment) once it listens on `url`, with the key it requires."""
    key = request_key(spec.args, spec.environment(base_env))
    return FirstRequest(url, key, timeout=timeout)
