"""Nix's own errors (issue 12): the `error:` block is what the person sees, never the last line
Nix printed; a network failure says the flake could not be fetched and how to use a local
checkout; asking a flake over a dead network is bounded; a failed build's report carries Nix's
error and the cause with its fix.

The parser is tested on stderr recorded from real Nix 2.8 (tests/fixtures/nix/stderr/, made by
its record.sh); the rest runs the real `nix` on fixture flakes, offline (as this machine is),
and through a local proxy that accepts connections and never answers (a network that hangs)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_wizard.nix.build import follow, start_build
from llama_wizard.nix.diagnose import diagnose
from llama_wizard.nix.environment import probe
from llama_wizard.nix.errors import FlakeError, FlakeUnreachable, offline_fix
from llama_wizard.nix.events import BuildProgress
from llama_wizard.nix.flake import asking_text, query_outputs
from llama_wizard.nix.messages import nix_error, nix_errors, strip_ansi
from tests.nix_fixtures import FLAKES, fixture_flake

STDERR = Path(__file__).resolve().parent / "fixtures" / "nix" / "stderr"


def recorded(name: str) -> str:
    with open(STDERR / name, encoding="utf-8", newline="") as handle:  # keep the \r Nix wrote
        text = handle.read()
    if "internal-json" in name:  # the `msg` records, as BuildProgress keeps them
        records = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("@nix ")]
        return "\n".join(r["msg"] for r in records if r.get("action") == "msg")
    return text


# --- the parser, on recorded stderr ---------------------------------------------------------


@pytest.mark.parametrize("name", ["syntax-error.txt", "syntax-error.tty.txt"])
def test_a_syntax_error_is_its_message_and_location(name: str) -> None:
    raw = recorded(name)
    assert strip_ansi(raw).rstrip().splitlines()[-1].strip().startswith("8|")  # source
    error = nix_error(raw)
    assert error is not None
    assert error.message == "syntax error, unexpected '=', expecting ';'"
    assert error.location is not None and error.location.endswith("-source/flake.nix:7:14")
    assert error.summary().endswith("flake.nix:7:14)")
    text = error.text
    assert text.startswith("error: syntax error") and "\x1b" not in text and "\r" not in text
    assert '7|       system = "x86_64-linux";' in text and "copying" not in text


def test_trace_frames_and_the_show_trace_hint_are_dropped() -> None:
    for name in ("eval-error.txt", "eval-error-show-trace.txt"):
        raw = recorded(name)
        error = nix_error(raw)
        assert error is not None and error.message == "attribute 'missing' missing"
        assert error.location is not None and error.location.endswith("flake.nix:3:17")
        assert "while evaluating" not in error.text and "from call site" not in error.text
        assert "--show-trace" not in error.text
    assert "while evaluating" in recorded("eval-error-show-trace.txt")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("offline-github.txt", "Couldn't resolve host name"),
        ("offline-github.tty.txt", "Couldn't resolve host name"),
        ("stalled-github.txt", "Timeout was reached"),
    ],
)
def test_a_download_that_failed_is_a_network_failure(name: str, reason: str) -> None:
    raw = recorded(name)
    last = strip_ansi(raw).rstrip().splitlines()[-1]
    assert last == "(use '--show-trace' to show detailed location information)"
    errors = nix_errors(raw)
    assert len(errors) == 1  # the "warning: error: … retrying" lines are not errors
    error = errors[0]
    assert error.network and error.network_reason == reason
    assert error.url == "https://api.github.com/repos/ggml-org/llama.cpp/commits/HEAD"


def test_the_missing_build_users_group_in_both_log_formats() -> None:
    for name in ("missing-group.txt", "missing-group.internal-json.txt"):
        error = nix_error(recorded(name))
        assert error is not None and not error.network
        assert error.message == "the group 'nixbld' specified in 'build-users-group' does not exist"


def test_a_failed_builder_keeps_its_last_log_lines() -> None:
    error = nix_error(recorded("build-failed.txt"))
    assert error is not None
    assert error.message.startswith("builder for '/nix/store/")
    assert error.message.endswith("-llama-cpp-fails-0.0.0.drv' failed with exit code 1")
    assert any("simulated compiler failure" in line for line in error.details)


def test_the_cause_comes_before_the_follow_on_errors() -> None:
    # Nix 2.8 prints a failed dependency's error, then one for each derivation that needed it.
    raw = recorded("build-failed.txt") + (
        "error: 1 dependencies of derivation '/nix/store/"
        "0000000000000000000000000000000a-llama-cpp-docker-0.0.0.drv' failed to build\n"
    )
    error = nix_error(raw)
    assert error is not None and error.message.startswith("builder for")


def test_newer_nix_puts_the_real_message_after_the_trace() -> None:
    # Written by hand in the shape Nix >= 2.20 prints (its trace frames first, then the error
    # indented; nixos/nix src/libutil/error.cc showErrorInfo): no newer Nix is installed here.
    raw = (
        "error:\n"
        "       … while calling the 'derivationStrict' builtin\n"
        "         at «nix-internal»/derivation-internal.nix:37:12:\n"
        "           36|\n"
        "           37|   strict = derivationStrict drvAttrs;\n"
        "             |            ^\n"
        "\n"
        "       … while evaluating attribute 'packages.x86_64-linux.default'\n"
        "\n"
        "       error: undefined variable 'undefinedVariable'\n"
        "       at /nix/store/fpyc7fs20g776cqiszii8zlc944d0nzz-source/flake.nix:4:35:\n"
        "            3|     packages.x86_64-linux.default = builtins.throw \"no\";\n"
        "            4|     packages.x86_64-linux.other = undefinedVariable;\n"
        "             |                                   ^\n"
    )
    error = nix_error(raw)
    assert error is not None and error.message == "undefined variable 'undefinedVariable'"
    assert error.location is not None and error.location.endswith("flake.nix:4:35")
    assert "derivationStrict" not in error.text


def test_no_error_block_is_none() -> None:
    assert nix_error("warning: Git tree '/x' is dirty\n") is None
    assert nix_error("") is None


# --- asking a real flake ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def nix_env():
    return probe()


def test_a_flake_with_a_syntax_error_shows_nixs_error(tmp_path, nix_env) -> None:
    flake = tmp_path / "broken"
    flake.mkdir()
    (flake / "flake.nix").write_text((FLAKES / "syntax-error" / "flake.nix").read_text())
    with pytest.raises(FlakeError) as raised:
        query_outputs(f"path:{flake}", "x86_64-linux", nix_env, use_cache=False)
    error = raised.value
    assert not isinstance(error, FlakeUnreachable)
    assert "syntax error, unexpected '=', expecting ';'" in error.message
    assert "flake.nix:7:14" in error.message
    assert not error.message.rstrip().endswith("^")  # the old summary: the caret line
    assert "--show-trace" not in error.message


@pytest.fixture
def hanging_proxy() -> Iterator[str]:
    """An HTTP proxy that accepts connections and never answers: a network that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()


def without_network_settings() -> str:
    """The tests' NIX_CONFIG without connect-timeout: Nix's own default (curl's 300 s)."""
    lines = os.environ["NIX_CONFIG"].splitlines()
    return "\n".join(line for line in lines if not line.startswith("connect-timeout")) + "\n"


def test_a_hanging_network_is_given_up_on_within_seconds(hanging_proxy, nix_env) -> None:
    env = dict(os.environ, https_proxy=hanging_proxy, NIX_CONFIG=without_network_settings())
    started = time.monotonic()
    with pytest.raises(FlakeUnreachable) as raised:
        query_outputs("github:ggml-org/llama.cpp", "x86_64-linux", nix_env, env=env,
                      use_cache=False)  # fmt: skip
    took = time.monotonic() - started
    # Nix's defaults would wait 300 s per attempt, five attempts; bounded: 5 s, then 1 s offline.
    assert took < 12, took
    error = raised.value
    assert "github:ggml-org/llama.cpp could not be fetched" in error.message
    assert "offline" in error.message
    assert "git clone https://github.com/ggml-org/llama.cpp" in error.fix
    assert "--flake path:/path/to/llama.cpp" in error.fix


def test_no_dns_is_given_up_on_at_once(nix_env) -> None:
    env = dict(os.environ, NIX_CONFIG=without_network_settings())
    started = time.monotonic()
    try:
        query_outputs("github:ggml-org/llama.cpp", "x86_64-linux", nix_env, env=env,
                      use_cache=False)  # fmt: skip
    except FlakeUnreachable as error:
        assert "Couldn't resolve host name" in error.message
    else:
        pytest.skip("this machine reaches GitHub")
    # Nix's five attempts with back-off took 4-5 s here; one attempt takes well under 2.
    assert time.monotonic() - started < 2.5


def test_the_status_says_it_fetches_from_github_and_falls_back() -> None:
    text = asking_text("github:ggml-org/llama.cpp")
    assert "from GitHub" in text and "known to have" in text
    assert "GitHub" not in asking_text("/home/me/llama.cpp")


def test_the_offline_fix_names_the_flakes_own_repository() -> None:
    assert "git clone https://github.com/me/llama.cpp`" in offline_fix("github:me/llama.cpp/b123")


# --- failed builds ----------------------------------------------------------------------------


def build_to_end(record, env=None) -> tuple:
    progress = BuildProgress()
    for batch in follow(record):
        for line in batch:
            progress.feed(line)
    from llama_wizard.nix.build import read_record

    return read_record(record), progress


def test_a_failed_build_reports_nixs_error_with_the_log(tmp_path) -> None:
    flake = fixture_flake(tmp_path / "flake", "documented")
    record = start_build(["nix", "build", f"{flake}#fails"], "fails", tmp_path / "state")
    record, progress = build_to_end(record)
    assert record.status == "failed"
    report = diagnose(progress, record)
    assert report.nix_error is not None
    assert report.nix_error.message.startswith("builder for '/nix/store/")
    lines = report.report_lines()
    assert lines[0].startswith("error: builder for '/nix/store/") and "exit code 1" in lines[0]
    assert any(line.startswith("full log: ") for line in lines)
    assert report.to_json()["nix_error"]["message"] == report.nix_error.message


def test_an_offline_build_says_the_flake_could_not_be_fetched(tmp_path, hanging_proxy) -> None:
    config = without_network_settings() + "connect-timeout = 2\ndownload-attempts = 1\n"
    env = dict(os.environ, https_proxy=hanging_proxy, NIX_CONFIG=config)
    record = start_build(["nix", "build", "github:ggml-org/llama.cpp#default"], "default",
                         tmp_path / "state", env=env)  # fmt: skip
    record, progress = build_to_end(record)
    assert record.status == "failed"
    report = diagnose(progress, record)
    assert report.nix_error is not None and report.nix_error.network
    assert report.cause is not None and report.cause.code == "offline"
    assert "is this machine offline?" in report.cause.message
    assert "git clone https://github.com/ggml-org/llama.cpp" in report.cause.fix
    lines = report.report_lines()
    assert lines[0].startswith("error: unable to download 'https://api.github.com/")
    assert not report.last_lines  # Nix's own messages are not shown as a build log


async def test_the_wizard_shows_why_an_offline_build_failed(tmp_path, hanging_proxy, monkeypatch):
    """The default flake (GitHub) with no network: the Build step falls back to the outputs
    upstream is known to have and says so; the build then fails, and the Build-run step shows
    the cause and the fix."""
    from textual.widgets import Static

    from llama_wizard.screens.build import BuildView
    from tests.wizard_helpers import make_app, next_step, settle, wait_for

    monkeypatch.chdir(tmp_path)  # no flake.nix here: the default flake is upstream llama.cpp
    monkeypatch.setenv("https_proxy", hanging_proxy)
    config = without_network_settings() + "connect-timeout = 2\ndownload-attempts = 1\n"
    monkeypatch.setenv("NIX_CONFIG", config)
    app = make_app(tmp_path, "no-gpu", flake="", model="Qwen/Qwen3-0.6B-GGUF")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await next_step(pilot)
        assert app.step == "build"
        plan = app.session.plan
        assert plan is not None and plan.build.flake == "github:ggml-org/llama.cpp"
        assert any(w.code == "flake_unreachable" for w in plan.warnings)
        status = str(app.screen.query_one("#plan-status", Static).content)
        assert "could not be fetched" in status and "known to have" in status
        await next_step(pilot)
        await next_step(pilot)
        assert app.step == "build-run"
        await wait_for(lambda: bool(app.screen.query(BuildView))
                       and app.screen.query_one(BuildView).final is not None)  # fmt: skip
        result = str(app.screen.query_one("#build-result", Static).content)
        assert "Nix could not download" in result and "is this machine offline?" in result
        assert "git clone https://github.com/ggml-org/llama.cpp" in result
