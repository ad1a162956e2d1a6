"""Bundled hardware profiles: real machines, described in JSON, turned into a fixture tree.

A profile is what `--simulate` runs on and what the tests detect. `materialize()` writes the
machine's /sys, /dev and /proc files under a directory and puts stand-in `rocminfo` /
`nvidia-smi` executables (which print the outputs recorded from that machine) in a `bin/` beside
it. Detection then runs for real over that tree; nothing in the detector knows it is simulated.

The format (see any file in `detect/profiles/`):

- ``name``, ``title``, ``description`` (one line for `--simulate list`: the machine it
  records, in GiB), ``sources`` (where every number came from)
- ``arch``, ``cpu`` {model, sockets, cores_per_socket, threads_per_core, flags}
- ``memory`` {total_kib, available_kib}
- ``pci``: list of {bdf, vendor, device, revision, class, subsystem_vendor, subsystem_device,
  driver|null, card, render_minor, attributes {sysfs file: value}}
- ``kfd``: null, or {nodes: [{id, properties {key: int}} | {id, properties_text}],
  dev_kfd: {mode, gid, group} | null}
- ``tools``: {tool name: [{args_contain?, stdout_file? | stdout?, stderr?, rc?, hang?}]} — the
  first entry whose ``args_contain`` occurs in the command line answers (no key: always).
- ``files``: {absolute path: text} for anything else (``/etc/group``, ``/proc/driver/...``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wizard.detect.errors import ProfileError

_HEADER_LINE = re.compile(r"^(# (source|note|derived|fields):|\$ )")


@dataclass(frozen=True)
class SimulatedMachine:
    name: str
    root: Path
    bin_dir: Path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose PATH finds this machine's recorded tools first."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def _profile_dir() -> Path:
    return Path(__file__).resolve().parent / "profiles"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in _profile_dir().glob("*.json"))


def describe_profiles() -> list[tuple[str, str]]:
    """(name, one-line description) of every bundled profile, for `--simulate list`; the
    title stands in for a profile without a description."""
    described = []
    for name in list_profiles():
        profile = load_profile(name)
        described.append((name, str(profile.get("description") or profile.get("title", ""))))
    return described


def profile_listing() -> str:
    """`--simulate list`: a profile a line, its name first (what --simulate takes), then what
    it is."""
    described = describe_profiles()
    width = max((len(name) for name, _ in described), default=0)
    return "\n".join(f"{name:<{width}}  {text}".rstrip() for name, text in described)


def load_profile(name: str) -> dict[str, Any]:
    path = _profile_dir() / f"{name}.json"
    if not path.is_file():
        available = ", ".join(list_profiles())
        raise ProfileError(
            f"No hardware profile named {name!r}. Available profiles: {available}. "
            "Run `llama-wizard --simulate list` to see them."
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ProfileError(
            f"Profile {name!r} is unreadable ({error}); reinstall llama-wizard."
        ) from error


def recorded_output(file_name: str) -> str:
    """A recorded tool output without the provenance header lines the references carry."""
    text = (_profile_dir() / "outputs" / file_name).read_text()
    lines = text.splitlines(keepends=True)
    while lines and _HEADER_LINE.match(lines[0]):
        lines.pop(0)
    return "".join(lines)


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(link):
        link.unlink()
    os.symlink(target, link)


def _write_pci_device(root: Path, device: dict[str, Any]) -> None:
    bdf = device["bdf"]
    device_dir = root / "sys/devices/pci0000:00" / bdf
    for key in ("vendor", "device", "revision", "class", "subsystem_vendor", "subsystem_device"):
        if device.get(key) is not None:
            _write(device_dir / key, f"{device[key]}\n")
    pci_class = str(device.get("class", "0x030000"))[2:].lstrip("0").upper() or "0"
    uevent = [
        f"PCI_CLASS={pci_class}",
        f"PCI_ID={device['vendor'][2:].upper()}:{device['device'][2:].upper()}",
        f"PCI_SLOT_NAME={bdf}",
    ]
    driver = device.get("driver")
    if driver:
        uevent.insert(0, f"DRIVER={driver}")
        (root / "sys/bus/pci/drivers" / driver).mkdir(parents=True, exist_ok=True)
        _symlink(device_dir / "driver", f"../../../bus/pci/drivers/{driver}")
    _write(device_dir / "uevent", "\n".join(uevent) + "\n")
    for name, value in device.get("attributes", {}).items():
        _write(device_dir / name, f"{value}\n")
    _symlink(root / "sys/bus/pci/devices" / bdf, f"../../../devices/pci0000:00/{bdf}")
    drm_nodes = []
    if device.get("card") is not None:
        drm_nodes.append(f"card{device['card']}")
    if device.get("render_minor") is not None:
        drm_nodes.append(f"renderD{device['render_minor']}")
        _write(root / "dev/dri" / f"renderD{device['render_minor']}", "")
    for node in drm_nodes:
        (device_dir / "drm" / node).mkdir(parents=True, exist_ok=True)
        _symlink(device_dir / "drm" / node / "device", f"../../../{bdf}")
        _symlink(root / "sys/class/drm" / node, f"../../devices/pci0000:00/{bdf}/drm/{node}")


def _write_kfd(root: Path, kfd: dict[str, Any]) -> None:
    nodes_dir = root / "sys/devices/virtual/kfd/kfd/topology/nodes"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    _symlink(root / "sys/class/kfd/kfd", "../../devices/virtual/kfd/kfd")
    for node in kfd.get("nodes", []):
        if "properties_text" in node:
            text = node["properties_text"]
        else:
            text = "".join(f"{key} {value}\n" for key, value in node["properties"].items())
        _write(nodes_dir / str(node["id"]) / "properties", text)
    dev_kfd = kfd.get("dev_kfd")
    if dev_kfd is not None:
        path = root / "dev/kfd"
        _write(path, "")
        os.chmod(path, int(str(dev_kfd.get("mode", "0666")), 8))
        if dev_kfd.get("gid") is not None and os.geteuid() == 0:
            os.chown(path, 0, int(dev_kfd["gid"]))


def _write_host(root: Path, profile: dict[str, Any]) -> None:
    cpu = profile.get("cpu", {})
    sockets = int(cpu.get("sockets", 1))
    cores = int(cpu.get("cores_per_socket", 1))
    threads_per_core = int(cpu.get("threads_per_core", 1))
    flags = " ".join(cpu.get("flags", []))
    blocks = []
    processor = 0
    for socket in range(sockets):
        for _thread in range(threads_per_core):
            for core in range(cores):
                blocks.append(
                    f"processor\t: {processor}\n"
                    f"model name\t: {cpu.get('model', 'Unknown CPU')}\n"
                    f"physical id\t: {socket}\n"
                    f"core id\t\t: {core}\n"
                    f"cpu cores\t: {cores}\n"
                    f"flags\t\t: {flags}\n"
                )
                processor += 1
    _write(root / "proc/cpuinfo", "\n".join(blocks) + "\n")
    memory = profile.get("memory", {})
    _write(
        root / "proc/meminfo",
        f"MemTotal:       {memory.get('total_kib', 0)} kB\n"
        f"MemFree:        {memory.get('available_kib', 0)} kB\n"
        f"MemAvailable:   {memory.get('available_kib', 0)} kB\n",
    )
    _write(root / "proc/sys/kernel/arch", f"{profile.get('arch', 'x86_64')}\n")


def _write_tool(bin_dir: Path, outputs_dir: Path, tool: str, answers: list[dict[str, Any]]) -> None:
    """A /bin/sh stand-in that answers as the recorded tool did, chosen by its arguments."""
    lines = ["#!/bin/sh", 'args="$*"']
    for number, answer in enumerate(answers):
        condition = answer.get("args_contain")
        body = []
        if answer.get("hang"):
            body.append("exec sleep 3600")
        else:
            if "stdout_file" in answer or "stdout" in answer:
                text = (
                    recorded_output(answer["stdout_file"])
                    if "stdout_file" in answer
                    else answer["stdout"]
                )
                out = outputs_dir / f"{tool}.{number}.stdout"
                _write(out, text)
                body.append(f"cat {shlex.quote(str(out))}")
            if answer.get("stderr"):
                err = outputs_dir / f"{tool}.{number}.stderr"
                _write(err, answer["stderr"])
                body.append(f"cat {shlex.quote(str(err))} >&2")
            body.append(f"exit {int(answer.get('rc', 0))}")
        pattern = "*" if condition is None else f"*{_sh_glob_escape(condition)}*"
        lines.append(f'case "$args" in {pattern})')
        lines.extend(f"  {line}" for line in body)
        lines.append(";; esac")
    lines.append("exit 0")
    script = bin_dir / tool
    _write(script, "\n".join(lines) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _sh_glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\\"'$` ])", r"\\\1", text)


def materialize(profile: dict[str, Any] | str, dest: str | os.PathLike[str]) -> SimulatedMachine:
    """Write the profile's machine under `dest` (root/, bin/, outputs/) and return where."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    base = Path(dest)
    root, bin_dir, outputs_dir = base / "root", base / "bin", base / "outputs"
    for directory in (root, bin_dir, outputs_dir):
        directory.mkdir(parents=True, exist_ok=True)
    (root / "sys/bus/pci/devices").mkdir(parents=True, exist_ok=True)
    (root / "sys/class/drm").mkdir(parents=True, exist_ok=True)
    for device in profile.get("pci", []):
        _write_pci_device(root, device)
    if profile.get("kfd") is not None:
        _write_kfd(root, profile["kfd"])
    _write_host(root, profile)
    for path, text in profile.get("files", {}).items():
        _write(root / path.lstrip("/"), text)
    for tool, answers in profile.get("tools", {}).items():
        _write_tool(bin_dir, outputs_dir, tool, answers)
    return SimulatedMachine(name=str(profile.get("name", base.name)), root=root, bin_dir=bin_dir)
