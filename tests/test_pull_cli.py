"""`llama-wizard pull`: the real installed command in a subprocess, against the stand-in Hub on
127.0.0.1 (tests/hub_server.py); then `plan` launches the pulled file with -m."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.fixtures.models.gguf_helpers import split_parts
from tests.gguf_factory import write_gguf as write_model
from tests.helpers import run_cli
from tests.hub_server import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    HubServer,
    fixture_hub,
    hub_server,
)
from tests.nix_fixtures import fixture_flake

REPO = "someone/Tiny-GGUF"


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_pull_json_downloads_the_best_quant_then_plan_uses_the_file(
    tmp_path: Path, hub: HubServer
) -> None:
    small = write_model(tmp_path / "s" / "Tiny-Q8_0.gguf").read_bytes()
    big = write_model(tmp_path / "b" / "Tiny-F16.gguf").read_bytes()
    sha = hub.add(REPO, {"Tiny-Q8_0.gguf": small, "Tiny-F16.gguf": big, "README.md": b"#"})
    result = run_cli("pull", REPO, "--json", "--simulate", "no-gpu")
    assert result.returncode == 0, result.stderr
    events = _lines(result.stdout)
    assert events[0]["event"] == "start" and events[0]["model"] == REPO
    # Both fit the simulated RAM: the best quant is the larger one.
    quant = events[0]["quant"]
    data = big if quant == "F16" else small
    assert quant == "F16", events[0]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(
        set(e) == {"event", "file", "done_bytes", "total_bytes", "bytes_per_second"}
        for e in progress
    )
    assert progress[-1]["done_bytes"] == progress[-1]["total_bytes"] == len(data)
    done = events[-1]
    assert done["event"] == "done" and done["bytes"] == len(data)
    path = Path(done["path"])
    snapshots = tmp_path / "hf-cache/models--someone--Tiny-GGUF/snapshots"
    assert path == snapshots / sha / "Tiny-F16.gguf"
    assert path.read_bytes() == data
    # The plan's launch takes the file with -m: no -hf, no network for llama.cpp.
    flake = fixture_flake(tmp_path / "flake")
    plan = run_cli("plan", "--json", "--simulate", "no-gpu", "--model", f"{REPO}:F16",
                   "--flake", str(flake))  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    launch = json.loads(plan.stdout)["model"]["launch_args"]
    assert launch[:2] == ["-m", str(path)] and "-hf" not in launch
    # Pulled again: only the header is read again (for the fit), the file is not fetched.
    gets = len(hub.gets())
    again = run_cli("pull", f"{REPO}:F16", "--simulate", "no-gpu")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(path) and "already here" in again.stderr
    assert all(r.range is not None for r in hub.gets()[gets:])


def test_pull_named_split_quant_plain_lines(tmp_path: Path, hub: HubServer) -> None:
    one, two = split_parts(tmp_path)
    hub.add(REPO, {"Q8_0/Tiny-Q8_0-00001-of-00002.gguf": one,
                   "Q8_0/Tiny-Q8_0-00002-of-00002.gguf": two})  # fmt: skip
    result = run_cli("pull", f"{REPO}:Q8_0", "--simulate", "no-gpu")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.name == "Tiny-Q8_0-00001-of-00002.gguf" and path.read_bytes() == one
    assert (path.parent / "Tiny-Q8_0-00002-of-00002.gguf").read_bytes() == two
    assert "in 2 parts" in result.stderr and f"-m {path}" in result.stderr
    assert "pulling someone/Tiny-GGUF:Q8_0" in result.stderr


def test_pull_errors_are_json_events_with_a_fix_and_no_token(
    tmp_path: Path, hub: HubServer
) -> None:
    hub.add("meta/Gated-GGUF", {"Gated-Q4_K_M.gguf": b"x"}, gated=True)
    env = {**os.environ, "HF_TOKEN": "hf_secretsecretsecretsecretsecretsecret1"}
    result = run_cli("pull", "meta/Gated-GGUF:Q4_K_M", "--json", "--simulate", "no-gpu", env=env)
    assert result.returncode == 1
    (event,) = _lines(result.stdout)
    assert event["event"] == "error" and "gated" in event["message"]
    assert "meta/Gated-GGUF" in event["fix"] and "HF_TOKEN" in event["fix"]
    assert "hf_secret" not in result.stdout + result.stderr
    missing = run_cli("pull", f"{tmp_path}/nothing.gguf", "--simulate", "no-gpu")
    assert missing.returncode == 1 and "No file" in missing.stderr
