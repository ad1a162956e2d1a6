"""The llama.cpp log parser on recorded real logs: today's llama.cpp (0c1e570, recorded here) and
older versions (excerpts of logs pasted in public issues). tests/fixtures/llamacpp/README.md says
where each came from; expected.json holds what each must give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_wizard.tui.llamacpp_log import (
    TimingLine,
    is_listening,
    parse_timing,
    speeds,
    split_prefix,
)

LOGS = Path(__file__).resolve().parent / "fixtures" / "llamacpp"
EXPECTED: dict[str, dict] = json.loads((LOGS / "expected.json").read_text())
RECORDED = sorted(str(path.relative_to(LOGS)) for path in LOGS.rglob("*.log"))


def lines_of(name: str) -> list[str]:
    return (LOGS / name).read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)


def test_every_recorded_log_has_expectations() -> None:
    assert RECORDED, "no recorded logs"
    assert sorted(EXPECTED) == RECORDED


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_log(name: str) -> None:
    expected = EXPECTED[name]
    lines = lines_of(name)
    timings = [timing for line in lines if (timing := parse_timing(line)) is not None]
    assert len(timings) == expected["timing_lines"]
    prompt, generation = speeds(lines)
    for got, want in ((prompt, expected["prompt"]), (generation, expected["generation"])):
        if want is None:
            assert got is None
        else:
            assert got is not None
            assert (got.tokens, got.tokens_per_second) == (
                want["tokens"],
                want["tokens_per_second"],
            )
            assert got.ms > 0
            if "timing_source" in expected:
                assert got.source == expected["timing_source"]
            if "slot_task" in expected:
                assert [got.slot, got.task] == expected["slot_task"]
    urls = [url for line in lines if (url := is_listening(line)) is not None]
    assert (urls[0] if urls else None) == expected["listening"]


def test_upstream_excerpts_name_their_source() -> None:
    for name, expected in EXPECTED.items():
        if name.startswith("upstream/"):
            assert expected["source_url"].startswith("https://github.com/"), name
    readme = (LOGS / "README.md").read_text()
    for name in EXPECTED:
        stem = Path(name).name.split(".")[0]  # completion-dense-lv4.stderr.log: the run's name
        assert f"`{stem}." in readme, f"README.md does not describe {name}"


def test_current_completion_timing_line() -> None:
    line = next(
        line
        for line in lines_of("0c1e570/completion-dense.stderr.log")
        if "prompt eval time" in line
    )
    timing = parse_timing(line)
    assert timing == TimingLine(
        kind="prompt", ms=23.18, tokens=15, tokens_per_second=647.11, source="common_perf_print"
    )
    stamp, level, message = split_prefix(line)
    assert (stamp, level) == ("0.00.915.356", "I")
    assert message.startswith("common_perf_print: prompt eval time")


def test_current_server_lines() -> None:
    lines = lines_of("0c1e570/server-dense.log")
    listening = [line for line in lines if is_listening(line)]
    assert len(listening) == 1 and "srv  llama_server: listening on" in listening[0]
    server = [timing for line in lines if (timing := parse_timing(line))]
    assert [timing.kind for timing in server] == ["prompt", "generation"]
    assert {(timing.slot, timing.task, timing.source) for timing in server} == {(3, 0, "server")}


def test_not_timing_lines() -> None:
    """Sampling, total, load, graph and progress lines carry no speed for the wizard."""
    for name in ("0c1e570/completion-dense-lv4.stderr.log", "0c1e570/server-dense.log"):
        for line in lines_of(name):
            if any(word in line for word in ("sampling time", "total time", "load time", "graphs")):
                assert parse_timing(line) is None, line
    progress = lines_of("upstream/server-timestamped-prompt-processing.log")[0]
    assert "tokens per second" in progress and parse_timing(progress) is None


def test_server_bound_before_model_load_is_not_ready() -> None:
    """Since late 2024 llama-server says it bound the port before loading the model; only
    `server is listening on` / `listening on` (after the load) means it answers requests."""
    for line in lines_of("upstream/server-bound-before-model-load.log"):
        assert is_listening(line) is None


def test_rates_llama_cpp_prints_as_inf_or_nan() -> None:
    # llama.cpp prints `inf`/`nan` tokens per second when a phase took no time or no tokens
    # (llama-cpp-python 0.3.0 printed 0.00 ms prompt eval times, abetlen/llama-cpp-python#1830).
    base = "llama_perf_context_print: prompt eval time =       0.00 ms /    13 tokens ("
    inf = parse_timing(base + "    0.00 ms per token,      inf tokens per second)")
    nan = parse_timing(base + "     nan ms per token,      nan tokens per second)")
    assert inf is not None and inf.tokens_per_second is None and inf.tokens == 13
    assert nan is not None and nan.tokens_per_second is None


def test_listening_variants_without_a_recorded_log() -> None:
    """Forms for which no public log was found with a citable source (see README.md)."""
    # llama-server 2024, text log format (server.cpp's LOG_INFO with --log-format text).
    old = (
        'INFO [                    main] HTTP server listening | tid="140147414781952" '
        'timestamp=1751293931 n_threads_http="31" port="8080" hostname="127.0.0.1"'
    )
    assert is_listening(old) == "http://127.0.0.1:8080"
    # today's server with a UNIX socket host (server-http.cpp: "unix://%s").
    sock = "0.00.044.081 I srv  llama_server: listening on unix:///run/llama.sock"
    assert is_listening(sock) == "unix:///run/llama.sock"
    # IPv6 host in the 2024 JSON form.
    json_v6 = '{"level":"INFO","msg":"HTTP server listening","hostname":"::1","port":"8080"}'
    assert is_listening(json_v6) == "http://[::1]:8080"


def test_model_output_is_not_a_timing_line() -> None:
    assert parse_timing("The prompt eval time = fast") is None
    trailing = "prompt eval time = 1.0 ms / 2 tokens (0.5 ms per token, 2000 tokens per second) ok"
    assert parse_timing(trailing) is None
    assert is_listening("I was listening on the radio") is None


def test_output_drawn_in_a_screen_has_no_control_characters() -> None:
    from llama_wizard.tui.llamacpp_log import printable

    raw = "ok\x1b[31mred\x1b[0m \x1b[2J\x1b[Hclear\rback\x07\ttab\x9b"
    shown = printable(raw)
    assert not any((ord(c) < 32 and c != "\t") or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert shown.startswith("okred ") and "\ttab" in shown and "clear" in shown
