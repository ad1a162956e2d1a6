"""Nix's `--log-format internal-json` stream, as a build's state.

Each stderr line is `@nix ` + one JSON record (start/stop/result/msg; see
shared/reference/nix-internal-json.md and textual-patterns.md §5.2). `BuildProgress.feed()` takes
lines one at a time and keeps what a person needs to see: derivations built / expected,
downloads, the running builds with their phase and their CMake/ninja `[N/M]` step, a bounded log
tail and the errors. Unknown record types and lines that are not JSON are kept as log text, never
an exception: newer Nix adds types (112 fetchTree, 108 fetchStatus) and Determinate Nix sends
`payload` instead of `fields`.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PREFIX = "@nix "
_STEP = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\s*\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DRV_NAME = re.compile(r"/nix/store/[0-9a-z]{32}-(.+?)(?:\.drv)?$")

# Activity types (logging.hh).
ACT_COPY_PATH, ACT_FILE_TRANSFER, ACT_REALISE, ACT_COPY_PATHS, ACT_BUILDS, ACT_BUILD = (
    100, 101, 102, 103, 104, 105,
)  # fmt: skip
ACT_SUBSTITUTE = 108
# Result types.
RES_BUILD_LOG_LINE, RES_SET_PHASE, RES_PROGRESS, RES_SET_EXPECTED = 101, 104, 105, 106
RES_POST_BUILD_LOG_LINE, RES_FETCH_STATUS = 107, 108


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def derivation_name(path: str) -> str:
    """/nix/store/<hash>-llama-cpp-rocm-gfx906-0.0.0.drv -> llama-cpp-rocm-gfx906-0.0.0"""
    match = _DRV_NAME.search(path)
    return match.group(1) if match else path


@dataclass
class RunningBuild:
    activity_id: int
    drv_path: str
    name: str
    started: float
    phase: str | None = None
    step: tuple[int, int] | None = None  # the [N/M] counter CMake/ninja print
    last_line: str = ""
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    finished: float | None = None


@dataclass
class LogLine:
    text: str
    source: str | None = None  # the derivation's name for build output, None for Nix's own


@dataclass
class BuildProgress:
    """The state of one `nix build`, rebuilt from its event stream."""

    tail_lines: int = 2000
    builds_done: int = 0
    builds_expected: int = 0
    builds_running: int = 0
    builds_failed: int = 0
    substitutions_done: int = 0
    substitutions_expected: int = 0
    download_bytes_expected: int = 0
    nar_bytes_expected: int = 0
    started: float = field(default_factory=time.monotonic)
    # When the build really started (seconds since the epoch, BuildRecord.started): a view that
    # re-attaches to a running build counts from there, not from when it began to read the log.
    wall_started: float | None = None
    running: dict[int, RunningBuild] = field(default_factory=dict)
    finished_builds: list[RunningBuild] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tail: deque[LogLine] = field(init=False)
    lines_seen: int = 0
    lines_logged: int = 0  # every line that ever entered the tail (it only keeps the last ones)
    _transfers: dict[int, tuple[int, int]] = field(default_factory=dict)
    _transfer_done_bytes: int = 0
    _activity_types: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tail = deque(maxlen=self.tail_lines)

    # -- feeding ---------------------------------------------------------------------------------

    def _log(self, line: LogLine) -> None:
        self.tail.append(line)
        self.lines_logged += 1

    def feed(self, line: str) -> None:
        self.lines_seen += 1
        if not line.startswith(PREFIX):
            text = line.rstrip("\n")
            if text:
                self._log(LogLine(strip_ansi(text)))
            return
        try:
            record = json.loads(line[5:])
        except ValueError:
            self._log(LogLine(strip_ansi(line.rstrip("\n"))))
            return
        if not isinstance(record, dict):
            self._log(LogLine(line.rstrip("\n")))
            return
        action = record.get("action")
        if action == "result":
            self._result(record)
        elif action == "start":
            self._start(record)
        elif action == "stop":
            self._stop(record)
        elif action == "msg":
            self._msg(record)
        elif action == "setPhase":  # stdenv's own record, when Nix passes it through
            self._set_phase(None, record.get("phase"))
        else:
            self._log(LogLine(line[5:].rstrip("\n")))

    def _fields(self, record: dict[str, Any]) -> list[Any]:
        fields = record.get("fields")
        if fields is None:
            payload = record.get("payload")
            if isinstance(payload, dict):
                return list(payload.values())
            return []
        return fields if isinstance(fields, list) else []

    def _result(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        fields = self._fields(record)
        activity = record.get("id")
        if kind in (RES_BUILD_LOG_LINE, RES_POST_BUILD_LOG_LINE, RES_FETCH_STATUS):
            if fields and isinstance(fields[0], str):
                self._build_line(activity, fields[0])
        elif kind == RES_PROGRESS:
            self._progress(activity, fields)
        elif kind == RES_SET_PHASE:
            self._set_phase(activity, fields[0] if fields else None)
        elif kind == RES_SET_EXPECTED and len(fields) >= 2:
            what, expected = fields[0], fields[1]
            if isinstance(expected, int):
                if what == ACT_FILE_TRANSFER:
                    self.download_bytes_expected = expected
                elif what == ACT_COPY_PATH:
                    self.nar_bytes_expected = expected

    def _build_line(self, activity: Any, text: str) -> None:
        text = strip_ansi(text)
        build = self.running.get(activity) if isinstance(activity, int) else None
        if build is None:
            self._log(LogLine(text))
            return
        build.last_line = text
        build.lines.append(text)
        if text.startswith("[") and (match := _STEP.match(text)):
            done, total = int(match.group(1)), int(match.group(2))
            if total > 0 and done <= total:
                build.step = (done, total)
        self._log(LogLine(text, build.name))

    def _progress(self, activity: Any, fields: list[Any]) -> None:
        if not isinstance(activity, int) or len(fields) < 2:
            return
        kind = self._activity_types.get(activity)
        numbers = [f if isinstance(f, int) else 0 for f in fields[:4]] + [0, 0]
        if kind == ACT_BUILDS:
            self.builds_done, self.builds_expected = numbers[0], numbers[1]
            self.builds_running, self.builds_failed = numbers[2], numbers[3]
        elif kind == ACT_COPY_PATHS:
            self.substitutions_done, self.substitutions_expected = numbers[0], numbers[1]
        elif kind in (ACT_FILE_TRANSFER, ACT_COPY_PATH):
            self._transfers[activity] = (numbers[0], numbers[1])

    def _set_phase(self, activity: Any, phase: Any) -> None:
        if not isinstance(phase, str):
            return
        build = self.running.get(activity) if isinstance(activity, int) else None
        if build is None and len(self.running) == 1:
            build = next(iter(self.running.values()))
        if build is not None:
            build.phase = phase

    def _start(self, record: dict[str, Any]) -> None:
        activity, kind = record.get("id"), record.get("type")
        if not isinstance(activity, int):
            return
        if isinstance(kind, int):
            self._activity_types[activity] = kind
        fields = self._fields(record)
        if kind == ACT_BUILD:
            drv = fields[0] if fields and isinstance(fields[0], str) else str(record.get("text"))
            self.running[activity] = RunningBuild(
                activity, drv, derivation_name(drv), time.monotonic()
            )
            self._log(LogLine(f"building {derivation_name(drv)}"))
        elif kind == ACT_SUBSTITUTE and fields:
            self._log(LogLine(f"fetching {derivation_name(str(fields[0]))}"))
        elif kind == ACT_FILE_TRANSFER and fields:
            self._log(LogLine(f"downloading {fields[0]}"))
        elif record.get("text") and (record.get("level") or 0) <= 3:
            self._log(LogLine(strip_ansi(str(record["text"]))))

    def _stop(self, record: dict[str, Any]) -> None:
        activity = record.get("id")
        if not isinstance(activity, int):
            return
        self._activity_types.pop(activity, None)
        transfer = self._transfers.pop(activity, None)
        if transfer is not None:
            self._transfer_done_bytes += transfer[0]
        build = self.running.pop(activity, None)
        if build is not None:
            build.finished = time.monotonic()
            build.lines = deque(build.lines, maxlen=200)
            self.finished_builds.append(build)

    def _msg(self, record: dict[str, Any]) -> None:
        text = strip_ansi(str(record.get("msg", "")))
        level = record.get("level", 3)
        if level == 0:
            self.errors.append(text)
        if text:
            self._log(LogLine(text))

    # -- reading -----------------------------------------------------------------------------

    @property
    def download_bytes_done(self) -> int:
        return self._transfer_done_bytes + sum(done for done, _ in self._transfers.values())

    @property
    def elapsed(self) -> float:
        if self.wall_started is not None:
            return max(0.0, time.time() - self.wall_started)
        return time.monotonic() - self.started

    def main_build(self) -> RunningBuild | None:
        """The llama.cpp derivation when it is running (the long compile), else any."""
        builds = list(self.running.values())
        for build in builds:
            if "llama" in build.name:
                return build
        return builds[0] if builds else None

    def compile_step(self) -> tuple[int, int] | None:
        """The `[N/M]` of the main running build; once it has finished, the last one it (or,
        failing that, any finished build) printed, so a view updated now and then still ends
        on the build's real count."""
        main = self.main_build()
        if main is not None and main.step is not None:
            return main.step
        finished = [b for b in reversed(self.finished_builds) if b.step is not None]
        for build in finished:
            if "llama" in build.name:
                return build.step
        return finished[0].step if finished else None

    def failed_build(self) -> RunningBuild | None:
        """The derivation that failed: named in Nix's error, else the last one to finish."""
        for error in self.errors:
            for build in reversed(self.finished_builds):
                if build.drv_path in error:
                    return build
        return self.finished_builds[-1] if self.finished_builds and self.errors else None

    def snapshot(self) -> dict[str, Any]:
        """Progress as one JSON-able record (the `progress` event of `build --json`)."""
        return {
            "builds": {"done": self.builds_done, "expected": self.builds_expected,
                       "running": self.builds_running, "failed": self.builds_failed},
            "downloads": {"done_bytes": self.download_bytes_done,
                          "expected_bytes": self.download_bytes_expected,
                          "paths_done": self.substitutions_done,
                          "paths_expected": self.substitutions_expected},
            "running": [
                {"drv": b.drv_path, "name": b.name, "phase": b.phase,
                 "step": list(b.step) if b.step else None,
                 "seconds": round(time.monotonic() - b.started, 1)}
                for b in self.running.values()
            ],
            "elapsed": round(self.elapsed, 1),
        }  # fmt: skip


def parse_line(line: str) -> dict[str, Any] | None:
    """One `@nix` record, or None when the line is not one (plain text)."""
    if not line.startswith(PREFIX):
        return None
    try:
        record = json.loads(line[5:])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
