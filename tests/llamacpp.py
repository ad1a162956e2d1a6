"""Real llama.cpp for the tests: the tools built by scripts/llamacpp, a fixture flake that packages
them, generated GGUF models, and a llama-server runner.

Test modules import the fixtures they use (each `fixture_NAME` provides the fixture `NAME`):

    from tests.llamacpp import fixture_llamacpp_bin, fixture_llamacpp_flake  # noqa: F401

- `llamacpp_bin` (session): runs scripts/llamacpp (cached under the real XDG cache dir; a cold
  build takes ~9 minutes on 2 cores) and returns its bin directory. A failed build fails the
  test: nothing is skipped.
- `llamacpp_flake` (per test): a temporary copy of tests/fixtures/flakes/llamacpp with the tools
  in its bin/ (a directory outside any git repository, so Nix reads it as a `path:` flake), whose
  outputs (default, rocm, rocm-gfx906, cuda, vulkan) install them into $out/bin. Nix reuses a
  finished output of the same flake; `fresh_flake()` makes it build (and log) again.
- `dense_gguf`, `moe_gguf`, `gpt_oss_gguf` (session): small models from tests/gguf_factory.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llama_wizard.tui.llamacpp_log import is_listening
from tests.gguf_factory import DENSE_SMALL, GPT_OSS_SMALL, MOE_SMALL, write_gguf

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "llamacpp"
FLAKE_DIR = Path(__file__).resolve().parent / "fixtures" / "flakes" / "llamacpp"
TOOLS = ("llama-completion", "llama-server", "llama-cli", "llama-bench", "llama-fit-params",
         "ggml-rpc-server")  # fmt: skip
BUILD_TIMEOUT = 3 * 3600

# The cache location as the caller had it: tests/conftest.py points XDG_CACHE_HOME at a fresh
# directory for every test, which would make every session rebuild llama.cpp.
_CALLER_ENV = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "HOME")}


def build_env() -> dict[str, str]:
    env = dict(os.environ)
    for name, value in _CALLER_ENV.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def build_llamacpp() -> Path:
    """Run scripts/llamacpp (building or reusing the cache); the bin directory it prints."""
    try:
        result = subprocess.run(
            [str(SCRIPT)],
            env=build_env(),
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:  # pragma: no cover - a broken machine
        pytest.fail(f"scripts/llamacpp did not finish in {BUILD_TIMEOUT}s: {error}")
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-40:])
        pytest.fail(f"scripts/llamacpp failed with status {result.returncode}:\n{tail}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        pytest.fail("scripts/llamacpp printed no bin directory")
    bin_dir = Path(lines[-1])
    missing = [
        tool for tool in ("llama-completion", "llama-server") if not (bin_dir / tool).exists()
    ]
    if missing:
        pytest.fail(f"scripts/llamacpp: {bin_dir} lacks {', '.join(missing)}")
    return bin_dir


@pytest.fixture(scope="session", name="llamacpp_bin")
def fixture_llamacpp_bin() -> Path:
    """The directory of the real llama.cpp CPU tools (scripts/llamacpp, cached)."""
    return build_llamacpp()


@pytest.fixture(scope="session", name="rpc_server_bin")
def fixture_rpc_server_bin(llamacpp_bin: Path) -> Path:
    """The RPC backend's worker program (ggml-rpc-server) of the real llama.cpp CPU build."""
    path = llamacpp_bin / "ggml-rpc-server"
    if not path.exists():
        pytest.fail(f"{path} is missing: scripts/llamacpp builds it (GGML_RPC=ON); run it again")
    return path


def make_flake(destination: Path, bin_dir: Path) -> str:
    """Copy the llamacpp fixture flake to `destination` with the tools in bin/; the directory
    (as a string, like tests/nix_fixtures.fixture_flake)."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy(FLAKE_DIR / "flake.nix", destination / "flake.nix")
    (destination / "bin").mkdir(exist_ok=True)
    for tool in sorted(bin_dir.iterdir()):
        if tool.is_file() and os.access(tool, os.X_OK):
            shutil.copy2(tool, destination / "bin" / tool.name)
    return str(destination)


def fresh_flake(flake: str) -> str:
    """Make every output of a copied llamacpp flake a new derivation, so Nix really builds it."""
    import uuid

    path = Path(flake) / "flake.nix"
    marker = "-- llama.cpp 0c1e570"
    path.write_text(path.read_text().replace(marker, f"{marker} {uuid.uuid4().hex[:8]}"))
    return flake


@pytest.fixture(name="llamacpp_flake")
def fixture_llamacpp_flake(tmp_path: Path, llamacpp_bin: Path) -> str:
    """A temporary copy of the fixture flake holding the real tools (its directory)."""
    return make_flake(tmp_path / "llamacpp-flake", llamacpp_bin)


@pytest.fixture(scope="session", name="dense_gguf")
def fixture_dense_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen3-0.6B's shapes with 2 layers and a 1024-token vocabulary (Q8_0, ~35 MB)."""
    return write_gguf(tmp_path_factory.mktemp("gguf") / "qwen3-dense.gguf", DENSE_SMALL)


@pytest.fixture(scope="session", name="moe_gguf")
def fixture_moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small qwen3moe (8 experts, 2 used, 2 layers; Q8_0, ~56 MB)."""
    return write_gguf(tmp_path_factory.mktemp("gguf") / "qwen3moe-small.gguf", MOE_SMALL)


@pytest.fixture(scope="session", name="gpt_oss_gguf")
def fixture_gpt_oss_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small gpt-oss (sliding window + full attention layers, sinks; Q8_0, ~24 MB)."""
    return write_gguf(tmp_path_factory.mktemp("gguf") / "gpt-oss-small.gguf", GPT_OSS_SMALL)


def nix_build_logged(
    flake: str, output: str, out_link: Path, timeout: float = 600
) -> tuple[Path, str]:
    """`nix build FLAKE#OUTPUT --out-link OUT_LINK -L` with the real nix: (output path, log)."""
    result = subprocess.run(
        ["nix", "build", f"{flake}#{output}", "--out-link", str(out_link), "-L"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"nix build {output} failed:\n{result.stderr[-4000:]}"
    return out_link.resolve(), result.stderr


def nix_build(flake: str, output: str, out_link: Path, timeout: float = 600) -> Path:
    """`nix build FLAKE#OUTPUT --out-link OUT_LINK` with the real nix; the output path."""
    return nix_build_logged(flake, output, out_link, timeout)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


class Server:
    """A running llama-server; a thread collects its output (stdout and stderr) in `lines`."""

    def __init__(self, popen: subprocess.Popen[str], url: str) -> None:
        self.popen = popen
        self.url = url
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def read_until(self, predicate: Callable[[str], object], timeout: float) -> str | None:
        """Collect lines until predicate(line) is true: that line, or None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                self._queue.put(None)
                return None
            self.lines.append(line)
            if predicate(line):
                return line
        return None

    def drain(self, timeout: float = 10) -> None:
        """After the process exited: collect the rest of its output."""
        self.read_until(lambda _line: False, timeout)
        self._reader.join(timeout)


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, *extra: str, timeout: float = 120) -> Iterator[Server]:
    """Start llama-server (`-c 2048 -t 2`, then `extra`) on a free 127.0.0.1 port in its own
    session and wait for its listening line; on leaving, stop it with SIGINT (then SIGKILL) and
    collect the rest of its log into `Server.lines`."""
    port = free_port()
    argv = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
            "-c", "2048", "-t", "2", *extra]  # fmt: skip
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",  # generated text in verbose logs need not be valid UTF-8
        start_new_session=True,
    )
    server = Server(popen, f"http://127.0.0.1:{port}")
    try:
        if server.read_until(lambda line: is_listening(line) is not None, timeout) is None:
            popen.kill()
            popen.wait(timeout=10)
            server.drain()
            log = "".join(server.lines[-40:])
            raise AssertionError(f"llama-server never said it was listening:\n{log}")
        yield server
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
        server.drain()
