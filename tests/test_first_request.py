"""The first request after launch (issue 13): one short chat request to llama-server once it is
up, its answer and llama-server's own speeds, in every face; a refused or failed request says
what the server said and what to do.

Real components: the CPU llama-server built by scripts/llamacpp (tests/llamacpp.py) on a
generated GGUF (its answer is gibberish: the structure is checked, not the words), the real
`llama-wizard run --server` and plain mode, the full-screen Launch step with the pilot; for the
error paths a small HTTP server on 127.0.0.1 answering as llama-server does when it fails.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import RadioButton, Static

from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.screens.dialogs import ConfirmScreen
from llama_wizard.tui.apikey import api_key_path
from llama_wizard.tui.first_request import (
    FirstAnswer,
    FirstRequest,
    FirstRequestError,
    chat_url,
    first_request,
    request_key,
)
from llama_wizard.tui.launch import LaunchSpec
from llama_wizard.tui.llamacpp_log import parse_timing
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plain.prompters import AutoPrompter
from llama_wizard.tui.plain.wizard import PlainWizard
from llama_wizard.tui.session import WizardSession
from tests.helpers import serve_on_a_free_port, serving, walk_to_launch, wizard_executable
from tests.llamacpp import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    fixture_dense_gguf,
    fixture_llamacpp_bin,
    fixture_llamacpp_flake,
    free_port,
    llama_server,
)
from tests.terminal import Terminal
from tests.test_launch_real import built, wait_gone, wizard
from tests.wizard_helpers import built_to_launch, make_app, wait_for

SUMMARY = re.compile(
    r'^First answer: "[^\n]+" \((\d+) tokens, [\d.]+ tokens/s; prompt [\d.]+ tokens/s\)$'
)


def assert_answered(answer: FirstAnswer) -> None:
    """What a real llama-server's answer holds, whatever the (generated) model says."""
    assert isinstance(answer.text, str)
    assert answer.tokens > 0 and answer.text, answer
    assert answer.prompt_tps is not None and answer.prompt_tps > 0
    assert answer.generation_tps is not None and answer.generation_tps > 0
    assert 0 < answer.seconds < 120
    match = SUMMARY.match(answer.summary())
    assert match, answer.summary()
    assert int(match[1]) == answer.tokens


# --- the core function against the real llama-server ---------------------------------------------


def test_the_first_request_gets_an_answer_and_llama_servers_speeds(
    llamacpp_bin: Path, dense_gguf: Path
) -> None:
    with llama_server(llamacpp_bin / "llama-server", dense_gguf) as server:
        answer = first_request(server.url + "/", timeout=60)
        # llama-server's log says the same of this request: its timing lines follow the reply.
        generation = server.read_until(
            lambda line: (t := parse_timing(line)) is not None and t.kind == "generation", 30
        )
    assert_answered(answer)
    assert generation is not None
    timing = parse_timing(generation)
    assert timing is not None and timing.tokens == answer.tokens
    assert timing.tokens_per_second == pytest.approx(answer.generation_tps, rel=0.01)
    assert "\n" not in answer.summary() and "\x1b" not in answer.summary()


def test_the_key_is_sent_and_a_missing_key_is_refused_with_the_servers_words(
    llamacpp_bin: Path, dense_gguf: Path
) -> None:
    key = "first-request-test-key"
    with llama_server(llamacpp_bin / "llama-server", dense_gguf, "--api-key", key) as server:
        with pytest.raises(FirstRequestError) as refused:
            first_request(server.url, timeout=60)
        wrong = request_key(["--api-key", "not-it"], {})
        with pytest.raises(FirstRequestError) as refused_wrong:
            first_request(server.url, wrong, timeout=60)
        answer = first_request(server.url, request_key(["--api-key", key], {}), timeout=60)
    assert_answered(answer)
    for error in (refused.value, refused_wrong.value):
        assert error.status == 401
        assert "Invalid API Key" in error.message and "(HTTP 401)" in error.message
        assert "--api-key" in error.fix and "curl" in error.fix
        assert key not in str(error)
    # The curl command the fix shows refers to the variable, never to the key.
    assert '"Authorization: Bearer $LLAMA_API_KEY"' in refused_wrong.value.fix
    assert "not-it" not in str(refused_wrong.value)


def test_request_key_reads_it_as_llama_server_does(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("\nfrom-file\nsecond\n")
    environment = {"LLAMA_API_KEY": "from-env"}
    assert request_key(["-m", "x.gguf"], environment) == "from-env"
    assert request_key(["--api-key", "first,second"], environment) == "first"
    assert request_key(["--api-key=inline"], environment) == "inline"
    assert request_key(["--api-key-file", str(key_file)], environment) == "from-file"
    assert request_key(["-m", "x.gguf"], {}) is None
    assert request_key(["--api-key-file", str(tmp_path / "none")], environment) is None


# --- the error paths, against a stand-in server ---------------------------------------------------


class StandIn(http.server.BaseHTTPRequestHandler):
    """Answers POSTs from the server's `replies` list, one per request (the last one repeats):
    (status, body bytes); records each request's headers and body."""

    def do_POST(self) -> None:
        stand_in: Any = self.server
        length = int(self.headers.get("Content-Length", "0"))
        body_in = json.loads(self.rfile.read(length))
        stand_in.requests.append((self.path, dict(self.headers), body_in))
        replies = stand_in.replies
        status, body = replies.pop(0) if len(replies) > 1 else replies[0]
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(name="stand_in")
def fixture_stand_in() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.replies = []  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    with serving(server):
        yield server


def stand_in_url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def error_body(code: int, message: str, kind: str) -> bytes:
    """llama-server's error reply (server-common.cpp format_error_response)."""
    return json.dumps({"error": {"code": code, "message": message, "type": kind}}).encode()


def test_a_server_error_shows_llama_servers_message_and_what_to_do(stand_in) -> None:
    said = "the model could not decode the prompt"
    stand_in.replies = [(500, error_body(500, said, "server_error"))]
    with pytest.raises(FirstRequestError) as failed:
        first_request(stand_in_url(stand_in), timeout=10)
    error = failed.value
    assert error.status == 500
    assert error.message == (
        f"llama-server at {stand_in_url(stand_in)} refused the first request: {said} (HTTP 500)."
    )
    assert "log says why" in error.fix and "`curl -sS " in error.fix
    assert chat_url(stand_in_url(stand_in)) in error.fix
    # What was asked: the short chat request, not streamed, with no key when none is given.
    path, headers, body = stand_in.requests[0]
    assert path == "/v1/chat/completions" and "Authorization" not in headers
    assert body["messages"] == [{"role": "user", "content": "Say hello in five words."}]
    assert body["stream"] is False and 0 < body["max_tokens"] <= 64


def test_an_error_without_llama_servers_shape_shows_the_http_status(stand_in) -> None:
    stand_in.replies = [(502, b"<html>bad gateway</html>")]
    with pytest.raises(FirstRequestError) as failed:
        first_request(stand_in_url(stand_in), timeout=10)
    assert failed.value.status == 502
    assert "refused the first request: HTTP 502 Bad Gateway (HTTP 502)." in failed.value.message


def test_a_server_still_loading_is_asked_again_until_it_answers(stand_in) -> None:
    loading = error_body(503, "Loading model", "unavailable_error")
    reply = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi\nthere `x`"}}],
        "usage": {"completion_tokens": 3, "prompt_tokens": 9},
        "timings": {"prompt_per_second": 120.5, "predicted_per_second": 30.25, "predicted_n": 3},
    }
    stand_in.replies = [(503, loading), (503, loading), (200, json.dumps(reply).encode())]
    answer = first_request(stand_in_url(stand_in), "k", timeout=30)
    assert len(stand_in.requests) == 3
    assert all(h["Authorization"] == "Bearer k" for _p, h, _b in stand_in.requests)
    assert answer.text == "Hi\nthere `x`" and answer.tokens == 3
    assert answer.prompt_tps == 120.5 and answer.generation_tps == 30.25
    # One line, and no backticks that a face would read as a code span.
    assert answer.summary() == (
        "First answer: \"Hi there 'x'\" (3 tokens, 30.2 tokens/s; prompt 120.5 tokens/s)"
    )


def test_a_server_that_keeps_loading_is_reported_when_time_runs_out(stand_in) -> None:
    stand_in.replies = [(503, error_body(503, "Loading model", "unavailable_error"))]
    with pytest.raises(FirstRequestError) as failed:
        first_request(stand_in_url(stand_in), timeout=1.5)
    assert failed.value.status == 503 and "Loading model" in failed.value.message
    assert "still loading" in failed.value.fix
    assert len(stand_in.requests) >= 2


def test_a_reply_that_is_no_chat_completion_is_said_so(stand_in) -> None:
    stand_in.replies = [(200, b'{"status": "ok"}')]
    with pytest.raises(FirstRequestError) as failed:
        first_request(stand_in_url(stand_in), timeout=10)
    assert "not with a chat completion" in failed.value.message
    assert "another port" in failed.value.fix


def test_nothing_listening_is_a_refused_connection() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(FirstRequestError) as failed:
        first_request(url, timeout=10)
    assert failed.value.message == (
        f"The first request could not reach llama-server at {url}: nothing listens there "
        "(connection refused)."
    )
    assert failed.value.status is None and "curl" in failed.value.fix


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        started = time.monotonic()
        with pytest.raises(FirstRequestError) as failed:
            first_request(url, timeout=1)
        assert time.monotonic() - started < 10
    assert failed.value.message == (
        f"llama-server at {url} did not answer the first request within 1 s."
    )


def test_the_background_request_hands_over_its_result_unless_abandoned(stand_in) -> None:
    stand_in.replies = [(500, error_body(500, "boom", "server_error"))]
    asking = FirstRequest(stand_in_url(stand_in), timeout=10)
    result = asking.wait(10)
    assert isinstance(result, FirstRequestError) and "boom" in result.message
    abandoned = FirstRequest(stand_in_url(stand_in), timeout=10)
    abandoned.abandon()
    assert abandoned.wait(10) is None


# --- the faces, with the real llama-server --------------------------------------------------------


def test_run_server_on_a_reachable_host_answers_the_first_request_with_its_key(
    llamacpp_flake, dense_gguf
) -> None:
    flake = built(llamacpp_flake)
    port = free_port()
    args = ["run", "--server", "--json", "--flake", flake, "--model", str(dense_gguf),
            "--host", "0.0.0.0", "--port", str(port)]  # fmt: skip
    with wizard(*args) as running:
        answer = running.until(lambda e: e["event"].startswith("first_answer"))
        running.popen.send_signal(signal.SIGINT)
        running.finish()
    events = running.events
    names = [e["event"] for e in events]
    assert answer["event"] == "first_answer", answer
    assert names.index("api_key") < names.index("listening") < names.index("first_answer")
    assert names[-1] == "exited"
    assert isinstance(answer["text"], str) and answer["tokens"] > 0
    assert answer["prompt_tps"] > 0 and answer["generation_tps"] > 0 and answer["seconds"] > 0
    # llama-server's own timing line for the request agrees with the answer's figures.
    generation = [e for e in events if e["event"] == "timing" and e["kind"] == "generation"]
    assert generation and generation[0]["generated_tokens"] == answer["tokens"]
    key = api_key_path().read_text().strip()
    assert key and not any(key in line for line in running.stdout + running.stderr)


def test_run_server_notes_the_first_answer_in_plain_text(llamacpp_flake, dense_gguf) -> None:
    flake = built(llamacpp_flake)
    port = free_port()
    args = ["run", "--server", "--flake", flake, "--model", str(dense_gguf), "--port", str(port)]
    with wizard(*args) as running:
        running.until_stderr("First answer: ")
        running.popen.send_signal(signal.SIGINT)
        running.finish()
    up = next(i for i, line in enumerate(running.stderr) if "llama-server is up" in line)
    shown = next(i for i, line in enumerate(running.stderr) if line.startswith("First answer: "))
    assert up < shown and SUMMARY.match(running.stderr[shown]), running.stderr[shown]


class StopOn:
    """Plain mode's output (a file-like): once `text` is written, the server gets SIGINT."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: list[str] = []
        self.wizard: PlainWizard | None = None

    def write(self, s: str) -> int:
        self.lines.append(s)
        if self.text in s and self.wizard and self.wizard.process:
            os.kill(self.wizard.process.pid, signal.SIGINT)
        return len(s)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.lines)


def test_plain_mode_prints_the_first_answer(
    llamacpp_bin, dense_gguf, tmp_path, monkeypatch
) -> None:
    out = StopOn("First answer: ")
    machine = Machine(SystemRoot(str(tmp_path)), dict(os.environ))
    wizard_ = PlainWizard(WizardSession(machine), AutoPrompter(out=out), out=out, err=out)
    out.wizard = wizard_
    port = free_port()
    wizard_.session.choices.port = port
    spec = LaunchSpec("llama-server", str(llamacpp_bin / "llama-server"),
                      ["-m", str(dense_gguf), "-c", "2048", "-t", "2", "--host", "127.0.0.1",
                       "--port", str(port)])  # fmt: skip
    monkeypatch.setattr(wizard_, "make_spec", lambda program: spec)
    wizard_.launch("llama-server")
    lines = out.getvalue().splitlines()
    up = next(i for i, line in enumerate(lines) if line.startswith("llama-server is up"))
    shown = [i for i, line in enumerate(lines) if line.startswith("First answer: ")]
    assert len(shown) == 1 and up < shown[0], "\n".join(lines[-30:])
    assert SUMMARY.match(lines[shown[0]]), lines[shown[0]]
    assert wizard_.process is not None and wait_gone(wizard_.process.pid, 5)


async def test_the_launch_step_shows_the_first_answer_without_taking_the_focus(
    llamacpp_flake, dense_gguf, tmp_path
) -> None:
    app = make_app(tmp_path, "no-gpu", flake=llamacpp_flake, model=str(dense_gguf))
    async with app.run_test(size=(120, 40)) as pilot:
        await built_to_launch(pilot, app)
        app.screen.query_one("#port").value = str(free_port())
        app.screen.query_one("#llama-server", RadioButton).value = True
        await pilot.pause()
        focused = app.focused
        await pilot.press("ctrl+r")
        speed = app.screen.query_one("#speed", Static)
        await wait_for(lambda: "First answer: " in str(speed.content), 120)
        shown = str(speed.content).splitlines()
        answer = next(line for line in shown if line.startswith("First answer: "))
        assert SUMMARY.match(answer), answer
        # llama-server's timing lines for the request are there too, above it.
        assert shown[0].startswith("prompt ") and "(llama.cpp's figures)" in shown[0]
        assert speed.display and app.focused is focused
        status = str(app.screen.query_one("#launch-status", Static).content)
        assert status.startswith(f"llama-server is up: {app.session.server_url()}")
        server = app.launched
        assert server is not None
        # Going on would stop the server: the step asks first; "Stay" keeps it running.
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and app.step == "launch"
        await pilot.press("n")
        await pilot.pause()
        assert app.step == "launch" and server.returncode is None and app.launch_running
        await pilot.press("ctrl+s")
        await wait_for(lambda: not app.launch_running)
        await pilot.pause()
        assert wait_gone(server.pid, 5)
        await pilot.press("q")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="scripts/test installs tmux")
def test_the_first_answer_in_a_real_80x24_terminal(llamacpp_flake: str, dense_gguf: Path) -> None:
    argv = [wizard_executable(), "--flake", llamacpp_flake, "--model", str(dense_gguf)]
    terminal = Terminal(argv, dict(os.environ), size=(80, 24))
    try:
        walk_to_launch(terminal)
        # llama-server (the program's radio buttons hold the focus), on a free port.
        port = serve_on_a_free_port(terminal)
        terminal.keys("C-r")
        screen = terminal.wait_for("First answer: ", timeout=120)
        assert f"llama-server is up: http://127.0.0.1:{port}/" in screen, screen
        shown = screen[screen.index("First answer: ") :]
        assert re.search(r"\(\d+ tokens, [\d.]+ tokens/s", shown), screen
        terminal.keys("C-s")
        terminal.wait_for("llama-server stopped.")
    finally:
        terminal.close()
