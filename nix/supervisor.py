"""The process that owns one `nix build` (see nix/build.py): started in its own session by
`start_build`, it runs Nix, writes the logs and the state file, and cleans up the process tree.

    python -m llama_wizard.nix.supervisor BUILD_DIR LOCK_FD
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from llama_wizard.detect.process import kill_leftovers, stop_process_tree
from llama_wizard.nix.build import BuildRecord, now_iso
from llama_wizard.nix.events import PREFIX, derivation_name, strip_ansi

GRACE_SECONDS = float(os.environ.get("LLAMA_WIZARD_CANCEL_GRACE", "5"))
PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Orphaned builders re-parent to us instead of init, so cleanup can still find them."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _readable(line: str) -> str | None:
    """The text log's version of one raw line: build output and messages, no bookkeeping."""
    if not line.startswith(PREFIX):
        return line
    try:
        record = json.loads(line[len(PREFIX) :])
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    action = record.get("action")
    if action == "msg":
        return strip_ansi(str(record.get("msg", "")))
    fields = record.get("fields") or []
    if action == "result" and record.get("type") in (101, 107) and fields:
        return strip_ansi(str(fields[0]))
    if action == "start" and record.get("type") == 105 and fields:
        return f"building {derivation_name(str(fields[0]))}"
    if action == "result" and record.get("type") == 104 and fields:
        return f"phase: {fields[0]}"
    return None


class Supervisor:
    def __init__(self, directory: Path) -> None:
        record = BuildRecord.load(directory)
        if record is None:
            raise SystemExit(f"no build state in {directory}")
        self.record = record
        self.process: subprocess.Popen[bytes] | None = None
        self.cancelled = threading.Event()
        self.stdout_chunks: list[bytes] = []

    def save(self) -> None:
        self.record.save()

    def on_cancel(self, signum: int, frame: object) -> None:
        del signum, frame
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        self.record.cancel_requested = True
        threading.Thread(target=self._escalate, daemon=True).start()

    def _escalate(self) -> None:
        """Stop Nix: SIGINT, then SIGTERM, GRACE_SECONDS apart, then SIGKILL and its leftovers.
        Nix shares our process group, so only Nix itself is signalled, never the group."""
        if self.process is None:
            return
        stop_process_tree(
            self.process, signals=(signal.SIGINT, signal.SIGTERM), grace=GRACE_SECONDS, group=False
        )

    def _kill_tree(self) -> None:
        """Everything below us: what Nix left running re-parented to us (we are a subreaper)."""
        kill_leftovers(os.getpid())

    def run(self) -> int:
        _become_subreaper()
        signal.signal(signal.SIGINT, self.on_cancel)
        signal.signal(signal.SIGTERM, self.on_cancel)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        record = self.record
        record.supervisor_pid = os.getpid()
        record.supervisor_started = psutil.Process().create_time()
        raw = open(record.raw_log, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        text = open(record.text_log, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        text.write(f"$ {' '.join(record.argv)}\n")
        try:
            self.process = subprocess.Popen(
                record.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as error:
            text.write(f"could not start nix: {error}\n")
            record.status, record.exit_code, record.ended = "failed", 127, now_iso()
            record.note = f"could not start {record.argv[0]}: {error.strerror}"
            self.save()
            return 1
        record.nix_pid = self.process.pid
        record.status = "running"
        self.save()
        if self.cancelled.is_set():  # cancelled before Nix even started
            threading.Thread(target=self._escalate, daemon=True).start()
        reader = threading.Thread(target=self._read_stdout, daemon=True)
        reader.start()
        assert self.process.stderr is not None
        for raw_line in iter(self.process.stderr.readline, b""):
            line = raw_line.decode("utf-8", errors="replace").rstrip("\n")
            raw.write(line + "\n")
            readable = _readable(line)
            if readable is not None:
                text.write(readable + "\n")
        code = self.process.wait()
        reader.join(timeout=5)
        self._kill_tree()  # builders Nix left behind (they re-parented to us)
        record.exit_code = code
        record.ended = now_iso()
        if self.cancelled.is_set():
            record.status = "cancelled"
        elif code == 0:
            record.status = "succeeded"
            record.out_paths = self._out_paths()
        else:
            record.status = "failed"
        text.write(f"-- build {record.status} (exit {code}) at {record.ended}\n")
        raw.close()
        text.close()
        self.save()
        return 0

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        self.stdout_chunks.append(self.process.stdout.read())

    def _out_paths(self) -> list[str]:
        try:
            results = json.loads(b"".join(self.stdout_chunks) or b"[]")
        except ValueError:
            return []
        paths = []
        for result in results if isinstance(results, list) else []:
            outputs = result.get("outputs", {}) if isinstance(result, dict) else {}
            paths.extend(str(p) for p in outputs.values())
        return paths


def main(argv: list[str]) -> int:
    directory = Path(argv[1])
    lock_fd = int(argv[2])  # held, not used: the lock lives as long as this process
    del lock_fd
    return Supervisor(directory).run()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
