"""Running `nix build` so that nothing is ever lost or left behind.

The build runs under a small supervisor process (`python -m llama_wizard.nix.supervisor`) in its
own session: closing the wizard or dropping the SSH connection does not stop it. The supervisor
writes Nix's raw event stream and a readable log to files under the XDG state directory as lines
arrive, and a state file (pid, output, started, log paths, status) that any later
`llama-wizard` finds: it follows a running build from the start of its log, or reports how a
finished one ended. Builds are named per flake and output (BuildChoice.build_name), so the same
output of two flakes (or two revisions of one) are two builds; a lock per name keeps two builds
of the same one from running at once.
Cancelling sends SIGINT to the supervisor, which stops Nix (SIGINT, then SIGTERM, then SIGKILL
after a grace period) and then kills any process left in the tree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import psutil

from llama_wizard.nix.errors import NixError

if TYPE_CHECKING:
    from llama_wizard.nix.recommend import BuildChoice

FINAL_STATES = ("succeeded", "failed", "cancelled", "lost")
STATE_FILE = "state.json"
STARTUP_SECONDS = 15.0


class BuildAlreadyRunning(NixError):
    def __init__(self, record: BuildRecord) -> None:
        super().__init__(
            f"A build of {record.output} is already running (pid {record.supervisor_pid}, "
            f"started {record.started}).",
            "Follow it with `llama-wizard build` (it reattaches), or cancel it first.",
        )
        self.record = record


@dataclass
class BuildRecord:
    """The state file: everything needed to find, follow or explain a build later."""

    slug: str
    output: str
    argv: list[str]
    directory: str
    raw_log: str
    text_log: str
    started: str
    status: str = "starting"  # starting, running, succeeded, failed, cancelled, lost
    supervisor_pid: int | None = None
    supervisor_started: float | None = None  # process create time, against pid reuse
    nix_pid: int | None = None
    exit_code: int | None = None
    ended: str | None = None
    out_paths: list[str] = field(default_factory=list)
    out_link: str | None = None
    cancel_requested: bool = False
    note: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def state_path(self) -> Path:
        return Path(self.directory) / STATE_FILE

    @property
    def started_timestamp(self) -> float | None:
        """`started` as seconds since the epoch (None if unreadable): elapsed time counts from
        here, also for a view that re-attaches long after the start."""
        return _timestamp(self.started)

    @property
    def ended_timestamp(self) -> float | None:
        return _timestamp(self.ended) if self.ended else None

    def save(self) -> None:
        """Written whole to a temporary file and renamed, so a reader never sees half of it."""
        temporary = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        temporary.replace(self.state_path)

    @classmethod
    def load(cls, directory: Path) -> BuildRecord | None:
        try:
            data = json.loads((directory / STATE_FILE).read_text())
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (OSError, ValueError, TypeError):
            return None


def _timestamp(iso: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def slug_for(output: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", output).strip("-") or "build"


def builds_dir(state_dir: Path) -> Path:
    return state_dir / "builds"


def internal_json_argv(build_argv: list[str]) -> list[str]:
    """The build command with Nix's event stream on stderr and the result as JSON on stdout.

    Nix 2.8 pitfall: `-L` *sets* the log format, so written after `--log-format internal-json`
    it silently switches back to plain text; it is dropped (build lines arrive as events anyway).
    `--print-out-paths` does not exist on 2.8; `--json` does."""
    argv = [arg for arg in build_argv if arg not in ("-L", "--print-build-logs")]
    try:
        position = argv.index("build") + 1
    except ValueError:
        raise ValueError(f"not a nix build command: {argv}") from None
    return [*argv[:position], "--log-format", "internal-json", "--json", *argv[position:]]


def _supervisor_alive(record: BuildRecord) -> bool:
    if record.supervisor_pid is None:
        # Between writing the first state and the supervisor starting, there is no pid yet.
        return record.status == "starting" and _age_seconds(record) < 2 * STARTUP_SECONDS
    try:
        process = psutil.Process(record.supervisor_pid)
        if record.supervisor_started and abs(process.create_time() - record.supervisor_started) > 1:
            return False  # the pid was reused by something else
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _age_seconds(record: BuildRecord) -> float:
    try:
        started = dt.datetime.fromisoformat(record.started)
    except ValueError:
        return float("inf")
    return (dt.datetime.now(dt.timezone.utc) - started).total_seconds()


def find_build(state_dir: Path, name: str) -> BuildRecord | None:
    """The last build named `name` (a BuildChoice.build_name; the output for a build started
    without a name): running, or how it ended. A build whose supervisor vanished without a final
    state (the machine restarted, say) is reported as lost."""
    record = BuildRecord.load(builds_dir(state_dir) / slug_for(name))
    if record is None:
        return None
    if not record.finished and not _supervisor_alive(record):
        # Give a supervisor that is just finishing a moment to write its final state.
        time.sleep(0.2)
        record = BuildRecord.load(builds_dir(state_dir) / slug_for(name)) or record
        if not record.finished:
            record.status = "lost"
            record.note = "the build process is gone without a result (was the machine restarted?)"
            record.ended = record.ended or now_iso()
            with contextlib.suppress(OSError):
                record.save()
    return record


def built_store_path(out_link: str) -> str | None:
    """The /nix/store path a result link points at, when that path exists (the build is done and
    its result not garbage-collected), else None."""
    link = Path(out_link)
    if not link.is_symlink():
        return None
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link, or a loop
        return None
    return str(target) if str(target).startswith("/nix/store/") else None


@dataclass(frozen=True)
class BuildStatus:
    """Where a planned build stands: running (record is the running build), built (store_path
    is its result), or not built (record is the last attempt, if any)."""

    state: Literal["running", "built", "not-built"]
    record: BuildRecord | None = None
    store_path: str | None = None


def build_status(state_dir: Path, choice: BuildChoice) -> BuildStatus:
    """The status of `choice`'s build: a running build first (it may be rebuilding what is
    there), then its result link."""
    record = find_build(state_dir, choice.build_name)
    if record is not None and not record.finished:
        return BuildStatus("running", record)
    store_path = built_store_path(choice.out_link)
    if store_path is not None:
        return BuildStatus("built", record, store_path)
    return BuildStatus("not-built", record)


def running_builds(state_dir: Path) -> list[BuildRecord]:
    """Every build under the state directory that is still running (from any session)."""
    found = []
    directory = builds_dir(state_dir)
    for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
        record = find_build(state_dir, entry.name) if (entry / STATE_FILE).is_file() else None
        if record is not None and not record.finished:
            found.append(record)
    return found


def start_build(
    build_argv: list[str],
    output: str,
    state_dir: Path,
    *,
    out_link: str | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> BuildRecord:
    """Start the build under its supervisor and return at once. `output` is what the messages
    call it; `name` (default: output) keys its directory and lock: BuildChoice.build_name, so
    that builds of the same output from different flakes stay apart. Raises
    BuildAlreadyRunning."""
    slug = slug_for(name or output)
    directory = builds_dir(state_dir) / slug
    directory.mkdir(parents=True, exist_ok=True)
    lock = open(directory / "lock", "a+")  # noqa: SIM115 - handed to the supervisor
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            existing = find_build(state_dir, name or output)
            if existing is None:
                raise NixError(
                    f"Another build of {output} holds its lock but has no state file.",
                    f"Wait for it, or remove {directory / 'lock'} if no nix process is running.",
                ) from None
            raise BuildAlreadyRunning(existing) from None
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        # A second build started within the same second gets its own logs, never the first's.
        taken = 1
        while (directory / f"{stamp}.log").exists() or (directory / f"{stamp}.nixlog").exists():
            taken += 1
            stamp = f"{stamp.split('.')[0]}.{taken}"
        if out_link:
            Path(out_link).parent.mkdir(parents=True, exist_ok=True)
        record = BuildRecord(
            slug=slug,
            output=output,
            argv=internal_json_argv(build_argv),
            directory=str(directory),
            raw_log=str(directory / f"{stamp}.nixlog"),
            text_log=str(directory / f"{stamp}.log"),
            started=now_iso(),
            out_link=out_link,
        )
        record.save()
        # The supervisor's own complaints (a Python error, say) land in the readable log.
        with open(record.text_log, "ab") as supervisor_errors:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_wizard.nix.supervisor",
                    str(directory),
                    str(lock.fileno()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=supervisor_errors,
                env=dict(os.environ if env is None else env),
                start_new_session=True,
                pass_fds=(lock.fileno(),),
                cwd=str(directory),
            )
        record.supervisor_pid = process.pid
        with contextlib.suppress(psutil.Error):
            record.supervisor_started = psutil.Process(process.pid).create_time()
        return _wait_started(record, process)
    finally:
        lock.close()


def _wait_started(record: BuildRecord, process: subprocess.Popen[bytes]) -> BuildRecord:
    """Return once the supervisor has started Nix (and so handles a cancel), or has failed."""
    directory = Path(record.directory)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        current = BuildRecord.load(directory) or record
        if current.status != "starting":
            return current
        if process.poll() is not None:
            break
        time.sleep(0.02)
    current = BuildRecord.load(directory) or record
    if current.status == "starting":
        process.kill()
        current.status, current.ended = "failed", now_iso()
        current.note = "the build supervisor did not start: " + " | ".join(
            log_tail(current.text_log, 5)
        )
        current.save()
        raise NixError(
            f"The build of {current.output} could not be started.",
            f"See {current.text_log} for what went wrong.",
        )
    return current


def request_cancel(record: BuildRecord) -> None:
    """Ask the supervisor to stop the build; it escalates and cleans up on its own."""
    if record.supervisor_pid is None or not _supervisor_alive(record):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(record.supervisor_pid, signal.SIGINT)


def wait_finished(record: BuildRecord, timeout: float) -> BuildRecord:
    deadline = time.monotonic() + timeout
    directory = Path(record.directory)
    while time.monotonic() < deadline:
        current = BuildRecord.load(directory) or record
        if current.finished:
            return current
        if not _supervisor_alive(current):
            time.sleep(0.2)
            return BuildRecord.load(directory) or current
        time.sleep(0.05)
    return BuildRecord.load(directory) or record


class LogFollower:
    """Reads a build's raw log from its start as it grows. Never blocks and keeps no state in a
    generator frame, so an interrupt (Ctrl-C while the caller sleeps) loses nothing."""

    def __init__(self, record: BuildRecord) -> None:
        self.record = record
        self.directory = Path(record.directory)
        self.path = Path(record.raw_log)
        self.handle: IO[str] | None = None
        self.pending = ""
        self.done = False

    def _build_over(self) -> bool:
        current = BuildRecord.load(self.directory) or self.record
        return current.finished or not _supervisor_alive(current)

    def read(self) -> list[str]:
        """New complete lines; [] when there are none yet. Sets `done` once the build has ended
        and every line has been returned."""
        if self.done:
            return []
        if self.handle is None:
            if not self.path.exists():
                self.done = self._build_over()
                return []
            self.handle = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
        # Check for the end *before* reading, so lines written just before it are not missed.
        over = self._build_over()
        chunk = self.handle.read(1 << 20)
        if chunk:
            lines = (self.pending + chunk).split("\n")
            self.pending = lines.pop()
            return lines
        if over:
            self.done = True
            self.handle.close()
            rest, self.pending = self.pending, ""
            return [rest] if rest else []
        return []

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def follow(record: BuildRecord, poll: float = 0.05) -> Iterator[list[str]]:
    """Batches of raw log lines from the start of the build's log until it has ended and every
    line has been read. An empty batch means "nothing new yet"."""
    follower = LogFollower(record)
    try:
        while True:
            lines = follower.read()
            if lines:
                yield lines
                continue
            if follower.done:
                return
            yield []
            time.sleep(poll)
    finally:
        follower.close()


def read_record(record: BuildRecord) -> BuildRecord:
    return BuildRecord.load(Path(record.directory)) or record


def log_tail(path: str, lines: int = 40) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def redact(argv: list[str]) -> list[str]:
    """Never let a token reach a log: values after known secret options, and key=value secrets."""
    secret = re.compile(r"(token|secret|password|api[_-]?key)", re.IGNORECASE)
    cleaned = []
    hide_next = False
    for arg in argv:
        if hide_next:
            cleaned.append("***")
            hide_next = False
        elif "=" in arg and secret.search(arg.split("=", 1)[0]):
            cleaned.append(arg.split("=", 1)[0] + "=***")
        else:
            cleaned.append(arg)
            hide_next = bool(arg.startswith("-") and secret.search(arg))
    return cleaned


def describe_record(record: BuildRecord) -> dict[str, Any]:
    return {
        "output": record.output,
        "status": record.status,
        "started": record.started,
        "ended": record.ended,
        "exit_code": record.exit_code,
        "out_paths": record.out_paths,
        "out_link": record.out_link,
        "log": record.text_log,
        "raw_log": record.raw_log,
        "note": record.note,
    }
