"""The internal-json parser over recorded Nix 2.8 streams and newer shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_wizard.nix.build import BuildRecord, internal_json_argv, redact
from llama_wizard.nix.diagnose import diagnose
from llama_wizard.nix.events import BuildProgress, derivation_name

STREAMS = Path(__file__).resolve().parent / "fixtures" / "nix"


def feed(name: str) -> BuildProgress:
    progress = BuildProgress()
    for line in (STREAMS / name).read_text().splitlines():
        progress.feed(line)
    return progress


def test_successful_2_8_build() -> None:
    progress = feed("nix-2.8-internal-json-build-ok.log")
    assert (progress.builds_done, progress.builds_expected, progress.builds_failed) == (1, 1, 0)
    [build] = progress.finished_builds
    assert build.name == "llama-cpp-rocm-gfx906"
    assert build.step == (5, 5)  # the [N/M] counter of the compile
    assert progress.errors == []
    assert any("Building CXX object" in line.text for line in progress.tail)


def test_failed_2_8_build_names_the_derivation_and_the_cause() -> None:
    progress = feed("nix-2.8-internal-json-build-fail.log")
    assert progress.builds_failed == 1
    failed = progress.failed_build()
    assert failed is not None and failed.name == "llama-cpp-broken"
    record = BuildRecord(slug="x", output="x", argv=["nix", "build", "--log-format",
                         "internal-json", ".#x"], directory="/tmp", raw_log="/tmp/r",
                         text_log="/tmp/x.log", started="now")  # fmt: skip
    report = diagnose(progress, record)
    assert report.derivation.endswith("llama-cpp-broken.drv")
    assert report.last_lines[-1] == "clang: error: unable to execute command: Killed"
    assert report.cause is not None and report.cause.code == "out_of_memory"
    assert report.nix_log_command == f"nix log {report.derivation}"


def test_rebuild_stream() -> None:
    progress = feed("nix-2.8-internal-json-rebuild-ok.log")
    assert progress.errors == [] and progress.finished_builds


def test_newer_nix_and_determinate_shapes_never_break_the_parser() -> None:
    progress = feed("nix-2.2x-determinate-shapes.log")
    assert (progress.builds_done, progress.builds_expected, progress.builds_failed) == (1, 2, 1)
    assert progress.download_bytes_expected == 1048576
    assert progress.download_bytes_done == 1048576
    assert (progress.substitutions_done, progress.substitutions_expected) == (1, 1)
    [build] = progress.finished_builds
    assert build.step == (18, 412)  # from a `payload` record, after ANSI colour was stripped
    assert build.phase == "installPhase"  # stdenv's own setPhase record
    texts = [line.text for line in progress.tail]
    assert "warning: Git tree '/home/me/llama.cpp' is dirty" in texts
    assert "@nix {broken json" in texts  # kept as text, not dropped
    assert any("teleport" in text for text in texts)  # unknown action kept
    assert progress.errors and "failed with exit code 2" in progress.errors[0]
    assert "\x1b" not in "".join(texts)


@given(st.text())
def test_any_line_is_accepted(line: str) -> None:
    progress = BuildProgress(tail_lines=10)
    progress.feed(line)
    progress.feed("@nix " + line)
    assert len(progress.tail) <= 10


def test_tail_is_bounded() -> None:
    progress = BuildProgress(tail_lines=100)
    for number in range(10_000):
        progress.feed(f"line {number}")
    assert len(progress.tail) == 100 and progress.lines_logged == 10_000
    assert progress.tail[-1].text == "line 9999"


def test_derivation_name() -> None:
    assert (
        derivation_name(
            "/nix/store/0xav2dbqsh9mhhjy08qmdch1sdkgrl5d-llama-cpp-rocm-gfx906-0.0.0.drv"
        )
        == "llama-cpp-rocm-gfx906-0.0.0"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nix", "build", ".#cuda", "--out-link", "r"],
         ["nix", "build", "--log-format", "internal-json", "--json", ".#cuda", "--out-link", "r"]),
        # -L after --log-format silently switches Nix 2.8 back to plain text: dropped.
        (["nix", "--extra-experimental-features", "nix-command flakes", "build", "-L", ".#x"],
         ["nix", "--extra-experimental-features", "nix-command flakes", "build", "--log-format",
          "internal-json", "--json", ".#x"]),
    ],
)  # fmt: skip
def test_internal_json_argv(argv: list[str], expected: list[str]) -> None:
    assert internal_json_argv(argv) == expected


def test_tokens_are_redacted() -> None:
    assert redact(["--hf-token", "hf_abc", "HF_TOKEN=hf_x", "-m", "model"]) == [
        "--hf-token", "***", "HF_TOKEN=***", "-m", "model",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("error: experimental Nix feature 'flakes' is disabled; use '--extra-experimental-"
         "features flakes' to override", "flakes_disabled"),
        ("cp: error writing '/nix/store/x': No space left on device", "no_space"),
        ("error: Package 'cudatoolkit-12.4' has an unfree license ('CUDA EULA'), refusing to "
         "evaluate.", "unfree"),
        ("c++: fatal error: Killed signal terminated program cc1plus", "out_of_memory"),
    ],
)  # fmt: skip
def test_known_failure_causes(line: str, code: str) -> None:
    progress = BuildProgress()
    progress.feed(f'@nix {{"action":"msg","level":0,"msg":"{line}"}}')
    record = BuildRecord(slug="x", output="x", argv=["nix", "build"], directory="/tmp",
                         raw_log="/tmp/r", text_log="/tmp/l", started="now")  # fmt: skip
    report = diagnose(progress, record)
    assert report.cause is not None and report.cause.code == code
    assert report.cause.fix
