"""/dev/kfd permissions, checked for real: the detection runs in a child process that has dropped
root for an unprivileged user, as a person's own login would be."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from llama_wizard.detect.inventory import detect
from llama_wizard.detect.simulate import load_profile, materialize

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another user needs root")


def _detect_as_nobody(root: Path, env: dict[str, str]) -> dict:
    # Load every module first: the unprivileged child may not be able to read the interpreter's
    # own library directory (a pyenv under /root, say).
    detect(root, timeout=5, env=env)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, detect, report, exit without running pytest code
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            document = detect(root, timeout=5, env=env).to_json()
            os.write(write_end, json.dumps(document).encode())
            status = 0
        except BaseException:
            import traceback

            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(b"".join(chunks))


@pytest.fixture
def world_readable_dir():
    directory = Path(tempfile.mkdtemp(prefix="llama-wizard-kfd-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def _machine(directory: Path, mode: str):
    profile = load_profile("kfd-no-access")
    profile["kfd"]["dev_kfd"]["mode"] = mode
    machine = materialize(profile, directory / "machine")
    for path in [directory / "machine", *(directory / "machine").rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    return machine


def test_kfd_not_openable_gives_the_usermod_fix(world_readable_dir: Path) -> None:
    machine = _machine(world_readable_dir, "0660")
    document = _detect_as_nobody(machine.root, machine.env())
    [warning] = [w for w in document["warnings"] if w["code"] == "kfd_permission"]
    assert "render" in warning["message"]
    assert "usermod -aG render,video" in warning["fix"]
    # The GPUs are still listed from sysfs: the person sees what they are fixing access to.
    assert [g["gfx_target"] for g in document["gpus"]] == ["gfx1031"]
    expected = json.loads((Path(__file__).parent / "fixtures/expected_machines.json").read_text())
    assert [w["code"] for w in document["warnings"]] == expected["kfd-no-access"][
        "warning_codes_unprivileged"
    ]


def test_kfd_open_to_the_user_gives_no_warning(world_readable_dir: Path) -> None:
    machine = _machine(world_readable_dir, "0666")
    document = _detect_as_nobody(machine.root, machine.env())
    assert document["warnings"] == []


def test_root_is_never_denied(simulated) -> None:
    profile = load_profile("2x-mi50")
    profile["kfd"]["dev_kfd"] = {"mode": "0600", "gid": 993}
    machine = simulated(profile)
    assert not [w for w in detect(machine.root, env=machine.env()).warnings
                if w.code == "kfd_permission"]  # fmt: skip


def test_missing_dev_kfd_says_how_to_pass_it_into_a_container(simulated) -> None:
    profile = load_profile("2x-mi50")
    profile["kfd"]["dev_kfd"] = None
    profile["tools"] = {}
    machine = simulated(profile)
    codes = {w.code: w for w in detect(machine.root, env=machine.env()).warnings}
    assert "--device /dev/kfd" in codes["kfd_missing"].fix
