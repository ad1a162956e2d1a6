"""Real `nix build`s of the fixture flake: progress, logs, failure, cancel, detach and reattach,
and nothing left running afterwards (checked with psutil)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.sysroot import SystemRoot
from llama_wizard.nix.build import (
    BuildAlreadyRunning,
    BuildRecord,
    build_status,
    find_build,
    follow,
    read_record,
    request_cancel,
    running_builds,
    start_build,
    wait_finished,
)
from llama_wizard.nix.events import BuildProgress
from llama_wizard.nix.flake import FlakeOutputs
from llama_wizard.tui.machine import Machine
from llama_wizard.tui.plan import Plan, make_plan
from llama_wizard.tui.plan import state_dir as wizard_state_dir
from tests.helpers import wizard_executable
from tests.nix_fixtures import fixture_flake, fresh_variant
from tests.terminal import Terminal


@pytest.fixture
def flake(tmp_path: Path) -> str:
    return fixture_flake(tmp_path / "flake", "documented")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def leftovers(marker: str) -> list[str]:
    """Processes whose command line mentions marker (our supervisor, nix, or a builder)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(process.info.get("cmdline") or [])
        if marker in cmdline and process.pid != os.getpid():
            found.append(f"{process.pid}: {cmdline}")
    return found


def build_to_end(record: BuildRecord) -> tuple[BuildRecord, BuildProgress]:
    progress = BuildProgress()
    for batch in follow(record):
        for line in batch:
            progress.feed(line)
    final = read_record(record)
    wait_gone(final.supervisor_pid)
    return final, progress


def wait_gone(pid: int | None, timeout: float = 10) -> None:
    """The supervisor writes its final state, then exits: give it the moment in between."""
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)


def wait_for_step(record: BuildRecord, timeout: float = 60) -> BuildProgress:
    progress = BuildProgress()
    deadline = time.monotonic() + timeout
    for batch in follow(record):
        for line in batch:
            progress.feed(line)
        main = progress.main_build()
        if main is not None and main.step is not None:
            return progress
        assert time.monotonic() < deadline, "the build never printed a [N/M] step"
    raise AssertionError(f"the build ended early: {read_record(record).status}")


def unique_slow(flake: str) -> str:
    """A `slow` derivation no other test has built (Nix would reuse a finished one)."""
    return f"{fresh_variant(flake, 'slow')}#slow"


def test_build_with_a_dependency_and_step_counter(flake, state_dir, tmp_path) -> None:
    out_link = str(tmp_path / "result-default")
    path = Path(flake) / "flake.nix"  # fresh derivations, so Nix really builds both
    path.write_text(path.read_text().replace('"ggml-deps"', f'"ggml-deps-{uuid.uuid4().hex[:6]}"'))
    record = start_build(
        ["nix", "build", f"{flake}#default", "--out-link", out_link],
        "default",
        state_dir,
        out_link=out_link,
    )
    record, progress = build_to_end(record)
    assert record.status == "succeeded", Path(record.text_log).read_text()
    assert progress.builds_done == 2 and progress.builds_expected == 2
    names = [b.name for b in progress.finished_builds]
    assert names[0].startswith("llama-cpp-ggml-deps") and names[1] == "llama-cpp-cpu-0.0.0"
    assert progress.finished_builds[1].step == (24, 24)
    assert record.out_paths and Path(out_link).resolve() == Path(record.out_paths[0])
    assert (Path(out_link) / "bin" / "llama-completion").exists()
    text = Path(record.text_log).read_text()
    assert "[24/24] Building CXX object" in text and "build succeeded" in text
    assert Path(record.raw_log).read_text().startswith("@nix ")
    assert leftovers(record.directory) == []


def test_failed_build_keeps_its_log_and_says_why(flake, state_dir) -> None:
    record = start_build(["nix", "build", f"{flake}#fails"], "fails", state_dir)
    record, progress = build_to_end(record)
    assert record.status == "failed" and record.exit_code != 0
    from llama_wizard.nix.diagnose import diagnose

    report = diagnose(progress, record)
    assert report.derivation and report.derivation.endswith("llama-cpp-fails-0.0.0.drv")
    assert "simulated compiler failure" in report.last_lines[-1]
    assert "simulated compiler failure" in Path(report.log_path).read_text()
    assert report.nix_log_command.startswith("nix log /nix/store/")
    # `nix log` really has the log (Nix keeps failed builds' logs too).
    shown = subprocess.run(
        report.nix_log_command.split(), capture_output=True, text=True, check=False
    )
    assert "simulated compiler failure" in shown.stdout


def test_cancel_stops_the_whole_tree_and_keeps_the_log(flake, state_dir) -> None:
    installable = unique_slow(flake)
    record = start_build(["nix", "build", installable], "slow", state_dir)
    progress = wait_for_step(record)
    running = read_record(record)
    assert running.status == "running" and running.nix_pid
    tree = [running.supervisor_pid, running.nix_pid]
    tree += [p.pid for p in psutil.Process(running.nix_pid).children(recursive=True)]
    request_cancel(running)
    final = wait_finished(running, timeout=30)
    assert final.status == "cancelled", final
    time.sleep(0.3)
    alive = [
        pid
        for pid in tree
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], alive
    assert leftovers(running.directory) == [] and leftovers("llama-cpp-slow") == []
    assert "[1/600]" in Path(final.text_log).read_text()
    assert progress.main_build().step[1] == 600


def test_two_builds_of_one_output_never_run_at_once(flake, state_dir) -> None:
    installable = unique_slow(flake)
    record = start_build(["nix", "build", installable], "slow", state_dir)
    try:
        with pytest.raises(BuildAlreadyRunning) as error:
            start_build(["nix", "build", installable], "slow", state_dir)
        assert error.value.record.supervisor_pid == read_record(record).supervisor_pid
    finally:
        request_cancel(read_record(record))
        assert wait_finished(record, timeout=30).status == "cancelled"


def test_a_build_whose_process_vanished_is_reported_lost(state_dir) -> None:
    directory = state_dir / "builds" / "ghost"
    directory.mkdir(parents=True)
    BuildRecord(
        slug="ghost",
        output="ghost",
        argv=["nix", "build"],
        directory=str(directory),
        raw_log=str(directory / "x.nixlog"),
        text_log=str(directory / "x.log"),
        started="2026-01-01T00:00:00",
        status="running",
        supervisor_pid=2**22 + 12345,
    ).save()
    record = find_build(state_dir, "ghost")
    assert record.status == "lost" and "restarted" in record.note


def _cli_env(state_dir: Path) -> dict[str, str]:
    return dict(os.environ, XDG_STATE_HOME=str(state_dir))


def test_cli_detach_then_reattach_and_ctrl_c(flake, state_dir, tmp_path) -> None:
    unique_slow(flake)
    env = _cli_env(state_dir)
    base = [
        wizard_executable(),
        "build",
        "slow",
        "--flake",
        flake,
        "--simulate",
        "no-gpu",
        "--json",
    ]
    detached = subprocess.run(
        [*base, "--detach"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert detached.returncode == 0, detached.stderr
    started = json.loads(detached.stdout.splitlines()[0])
    assert started["event"] == "started"
    supervisor = started["pid"]
    assert psutil.pid_exists(supervisor)
    # A second command finds the running build and follows it from its log.
    follower = subprocess.Popen(
        base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert follower.stdout is not None
    first = json.loads(follower.stdout.readline())
    assert first["event"] == "attached" and first["pid"] == supervisor
    seen_step = False
    for line in follower.stdout:
        event = json.loads(line)
        if event["event"] == "log" and event["line"].startswith("[1/600]"):
            seen_step = True
            break
    assert seen_step
    follower.send_signal(signal.SIGINT)  # Ctrl-C: cancel the build
    rest = [json.loads(line) for line in follower.stdout]
    assert follower.wait(timeout=30) == 130
    assert rest[-1]["event"] == "result" and rest[-1]["status"] == "cancelled"
    assert any(event["event"] == "cancelling" for event in rest)
    time.sleep(0.3)
    assert not psutil.pid_exists(supervisor) or psutil.Process(supervisor).status() == "zombie"
    assert leftovers(str(state_dir)) == []
    assert Path(rest[-1]["log"]).exists()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by scripts/test")
def test_build_survives_the_terminal_going_away(flake, state_dir) -> None:
    unique_slow(flake)
    env = dict(os.environ, XDG_STATE_HOME=str(state_dir))
    command = [wizard_executable(), "build", "slow", "--flake", flake, "--simulate", "no-gpu"]
    terminal = Terminal(command, env, (100, 30))
    try:
        record = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # The CLI names the build per flake (slow-KEY); its output is still "slow".
            running = running_builds(state_dir / "llama-wizard")
            record = next((r for r in running if r.output == "slow"), None)
            if record and record.status == "running":
                break
            time.sleep(0.2)
        assert record is not None and record.status == "running"
        screen = terminal.wait_for("Derivations", timeout=20)
        assert "slow" in screen, screen
    finally:
        # The SSH session drops: the terminal and everything in its session get SIGHUP.
        terminal.close()
    time.sleep(1.0)
    still = find_build(state_dir / "llama-wizard", record.slug)
    assert still.status == "running" and psutil.pid_exists(still.supervisor_pid)
    request_cancel(still)
    assert wait_finished(still, timeout=30).status == "cancelled"
    time.sleep(0.3)
    assert leftovers(str(state_dir)) == []


def _plan(simulated, profile: str, flake: str) -> Plan:
    box = simulated(profile)
    machine = Machine(SystemRoot(box.root), box.env(), simulated=box.name)
    return make_plan(machine, detect(machine.root, timeout=5, env=machine.env), flake_ref=flake)


def test_a_build_counts_as_built_only_for_the_flake_it_was_built_from(simulated, tmp_path) -> None:
    # Flake B is a copy of flake A at another path: the same `default` output, another flake.
    plan_a = _plan(simulated, "no-gpu", fixture_flake(tmp_path / "a", "documented"))
    plan_b = _plan(simulated, "no-gpu", fixture_flake(tmp_path / "b", "documented"))
    a, b = plan_a.build, plan_b.build
    assert a.output == b.output == "default"
    assert a.build_name != b.build_name and a.out_link != b.out_link
    assert a.build_name == f"default-{plan_a.flake_outputs.key}"
    assert Path(a.out_link).name == f"result-{a.build_name}"
    state = wizard_state_dir()
    assert build_status(state, a).state == "not-built"
    record = start_build(a.build_argv, a.build_label, state, out_link=a.out_link, name=a.build_name)
    assert record.output == "default" and Path(record.directory).name == a.build_name
    final, _ = build_to_end(record)
    assert final.status == "succeeded", Path(final.text_log).read_text()
    built = build_status(state, a)
    assert built.state == "built" and built.store_path == final.out_paths[0]
    assert built.record is not None and built.record.status == "succeeded"
    other = build_status(state, b)
    assert other.state == "not-built" and other.store_path is None and other.record is None


def test_a_running_build_comes_before_the_result_link(simulated, tmp_path) -> None:
    plan = _plan(simulated, "no-gpu", fixture_flake(tmp_path / "flake", "documented"))
    state = wizard_state_dir()
    directory = state / "builds" / plan.build.build_name
    directory.mkdir(parents=True)
    BuildRecord(
        slug=plan.build.build_name,
        output="default",
        argv=["nix", "build"],
        directory=str(directory),
        raw_log=str(directory / "x.nixlog"),
        text_log=str(directory / "x.log"),
        started="2026-01-01T00:00:00",
        status="running",
        supervisor_pid=os.getpid(),  # alive: this build is running
    ).save()
    status = build_status(state, plan.build)
    assert status.state == "running" and status.record is not None and status.store_path is None


def test_flake_key_names_the_flake_revision_or_its_reference() -> None:
    def outputs(ref: str, locked: str | None = None, revision: str | None = None) -> FlakeOutputs:
        return FlakeOutputs(ref, "x86_64-linux", ["default"], locked_url=locked, revision=revision)

    key = outputs("github:ggml-org/llama.cpp", "github:ggml-org/llama.cpp/abc", "abc").key
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert key == outputs("github:ggml-org/llama.cpp", "github:ggml-org/llama.cpp/abc", "abc").key
    assert key != outputs("github:ggml-org/llama.cpp", "github:ggml-org/llama.cpp/def", "def").key
    # Without a revision (no Nix to ask), the reference itself: another path, another key.
    assert outputs("/srv/a").key == outputs("/srv/a").key != outputs("/srv/b").key


def test_cli_success_prints_the_out_path_last(flake, state_dir) -> None:
    result = subprocess.run(
        [wizard_executable(), "build", "rocm-gfx906", "--flake", flake, "--simulate", "2x-mi50"],
        capture_output=True,
        text=True,
        env=_cli_env(state_dir),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("/nix/store/") and last.endswith("llama-cpp-rocm-gfx906-0.0.0")
    # The result link is named per flake: result-OUTPUT-KEY (12 hex digits of the flake).
    [link] = (state_dir / "llama-wizard" / "builds").glob("result-rocm-gfx906-*")
    assert re.fullmatch(r"result-rocm-gfx906-[0-9a-f]{12}", link.name)
    assert link.resolve() == Path(last)


def test_cli_failure_exit_status_and_report(flake, state_dir) -> None:
    result = subprocess.run(
        [wizard_executable(), "build", "fails", "--flake", flake, "--simulate", "no-gpu"],
        capture_output=True,
        text=True,
        env=_cli_env(state_dir),
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "failing derivation" in result.stderr and "nix log" in result.stderr
    assert "simulated compiler failure" in result.stderr
