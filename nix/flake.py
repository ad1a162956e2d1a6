"""Asking a real flake which outputs it has, cached per flake revision.

Evaluating upstream llama.cpp's outputs means fetching and evaluating nixpkgs, which is slow, so
the answer is cached under the flake's locked hash: a new revision asks again, the same one never
does. `nix flake metadata` (cheap: it fetches only the flake's own source) gives that hash.

The default flake is on GitHub, so the first question may go to a network that is not there:
Nix's defaults retry a failed download five times and wait up to 300 s for a stalled one. The
question is asked once with short timeouts (NETWORK_OPTIONS); when the network fails, Nix is
asked again `--offline` (its copy from an earlier fetch, if any), and failing that the caller
gets FlakeUnreachable (it falls back to the outputs the flake is known to have). Nix's own error
(nix/messages.py) is what the person is shown, never the last line it printed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from platformdirs import user_cache_dir

from llama_wizard.detect.tools import ToolNotFound, ToolTimeout, run_tool
from llama_wizard.nix.environment import NixEnvironment
from llama_wizard.nix.errors import FlakeError, FlakeUnreachable, NixNotFound
from llama_wizard.nix.messages import nix_error

UPSTREAM_FLAKE = "github:ggml-org/llama.cpp"
CACHE_VERSION = 1
# How long asking a flake may wait on the network: a connection gets 5 s, a download that has
# stalled 15 s; the flake's own metadata is tried once (on failure Nix's offline copy is asked).
CONNECT_TIMEOUT_S = 5
STALLED_DOWNLOAD_S = 15
NETWORK_OPTIONS = (
    "--option", "connect-timeout", str(CONNECT_TIMEOUT_S),
    "--option", "stalled-download-timeout", str(STALLED_DOWNLOAD_S),
)  # fmt: skip
METADATA_OPTIONS = (*NETWORK_OPTIONS, "--option", "download-attempts", "1")
# `--offline` still tries GitHub when Nix has no copy: that try only gets a second.
OFFLINE_OPTIONS = (
    "--offline", "--option", "connect-timeout", "1", "--option", "download-attempts", "1",
)  # fmt: skip


@dataclass
class FlakeOutputs:
    ref: str
    system: str
    packages: list[str]
    apps: list[str] = field(default_factory=list)
    dev_shells: list[str] = field(default_factory=list)
    nixos_modules: list[str] = field(default_factory=list)
    overlays: list[str] = field(default_factory=list)
    locked_url: str | None = None
    revision: str | None = None
    from_cache: bool = False
    # Read from Nix's copy of an earlier fetch because the network failed.
    offline: bool = False

    def has(self, output: str) -> bool:
        return output in self.packages

    @property
    def key(self) -> str:
        """A short stable name for this flake's identity (12 hex digits), for keeping build
        results apart: the locked URL and revision when Nix told us them (a new revision, or the
        same flake at another path, is another key), else the flake reference itself."""
        if self.revision:
            # The locked URL without its query: a path flake's carries lastModified, which a
            # mere `touch` changes although the content (narHash, the revision) is the same.
            where = (self.locked_url or self.ref).split("?", 1)[0]
            identity = f"{where}|{self.revision}"
        else:
            identity = normalize_ref(self.ref)
        return hashlib.sha256(identity.encode()).hexdigest()[:12]

    @property
    def rocm_gfx_outputs(self) -> list[str]:
        return sorted(p.removeprefix("rocm-") for p in self.packages if p.startswith("rocm-gfx"))


def default_flake_ref(cwd: Path | None = None) -> str:
    """The current directory when it holds a llama.cpp flake, else upstream llama.cpp's."""
    directory = (cwd or Path.cwd()).resolve()
    flake = directory / "flake.nix"
    try:
        text = flake.read_text(errors="replace")
    except OSError:
        return UPSTREAM_FLAKE
    return str(directory) if "llama" in text.lower() else UPSTREAM_FLAKE


def normalize_ref(ref: str, cwd: Path | None = None) -> str:
    """Relative paths become absolute (nix needs that inside `builtins.getFlake`)."""
    if ref.startswith((".", "/")) and ":" not in ref.split("/", maxsplit=1)[0]:
        return str(((cwd or Path.cwd()) / ref).resolve())
    if ref.startswith("path:") and not ref.startswith("path:/"):
        return "path:" + str(((cwd or Path.cwd()) / ref[5:]).resolve())
    return ref


def nix_string(text: str) -> str:
    """A Nix double-quoted string with `text` as its exact value: backslash, quote and every
    `$` escaped (so no `${` interpolation), newline/CR/tab as \\n \\r \\t; other characters,
    UTF-8 included, as they are (JSON's \\u escapes mean something else to Nix)."""
    escapes = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(ch, ch) for ch in text) + '"'


def _cache_dir() -> Path:
    return Path(user_cache_dir("llama-wizard")) / "flake-outputs"


def _run(argv: list[str], env: Mapping[str, str] | None, timeout: float):
    try:
        return run_tool(argv, timeout=timeout, env=env)
    except ToolNotFound:
        raise NixNotFound() from None
    except ToolTimeout:
        raise FlakeError(
            f"{' '.join(argv[:3])} did not finish within {timeout:g} s.",
            "Nix may be downloading a large input; try again, or raise --timeout.",
        ) from None


def is_local(ref: str) -> bool:
    """Whether the flake is a directory here (no network needed to read the flake itself)."""
    return ref.startswith(("/", ".", "path:", "git+file:"))


def asking_text(ref: str) -> str:
    """What asking the flake is doing, for the person waiting on it."""
    if ref.startswith("github:"):
        return (
            f"Fetching {ref} from GitHub to see which outputs it has (offline, this gives up "
            f"within about {CONNECT_TIMEOUT_S + 1} s and uses the outputs it is known to have)…"
        )
    if is_local(ref):
        return f"Asking the flake {ref} which outputs it has…"
    return f"Fetching {ref} to see which outputs it has…"


def _failure(ref: str, what: str, stderr: str, returncode: int, fix: str) -> FlakeError:
    """Nix's own error as a FlakeError: a network failure says the flake could not be fetched
    and how to use a local checkout."""
    error = nix_error(stderr)
    if error is not None and error.network:
        return FlakeUnreachable(ref, error.network_reason or error.message)
    if error is not None:
        detail = error.text
    else:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"nix exited with status {returncode}"
    return FlakeError(f"{what} {ref} failed. Nix says:\n{detail}", fix)


def _metadata(ref: str, nix_env: NixEnvironment, env, timeout: float, offline: bool) -> dict:
    options = OFFLINE_OPTIONS if offline else METADATA_OPTIONS
    result = _run(nix_env.nix_argv("flake", "metadata", "--json", *options, ref), env, timeout)
    if not result.ok:
        raise _failure(
            ref,
            "Reading the flake",
            result.stderr,
            result.returncode,
            "Check the flake reference (`--flake github:OWNER/REPO`, `--flake path:/dir`) and "
            "its flake.nix (`nix flake metadata` on it shows the same error).",
        )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise FlakeError(
            f"`nix flake metadata` printed something that is not JSON for {ref}.",
            "Run `nix flake metadata` on it yourself to see what Nix says.",
        ) from None


def query_outputs(
    ref: str,
    system: str,
    nix_env: NixEnvironment,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    use_cache: bool = True,
) -> FlakeOutputs:
    """The outputs `ref` offers for `system`. Raises FlakeUnreachable (the network failed and
    Nix has no copy) or FlakeError (Nix's own error), each with a fix."""
    offline = False
    try:
        metadata = _metadata(ref, nix_env, env, timeout, offline=False)
    except FlakeUnreachable as unreachable:
        try:
            metadata = _metadata(ref, nix_env, env, timeout, offline=True)
        except FlakeError:
            raise unreachable from None
        offline = True
    locked = metadata.get("locked") or {}
    revision = metadata.get("revision") or locked.get("rev") or locked.get("narHash")
    locked_url = metadata.get("url") or ref
    key = hashlib.sha256(f"{CACHE_VERSION}|{ref}|{system}|{revision}".encode()).hexdigest()[:32]
    cache_file = _cache_dir() / f"{key}.json"
    if use_cache and revision and cache_file.is_file():
        try:
            cached = FlakeOutputs(**json.loads(cache_file.read_text()))
            cached.from_cache = True
            return cached
        except (OSError, ValueError, TypeError):
            pass  # a damaged cache entry is asked again and rewritten
    expression = (
        f"let f = builtins.getFlake {nix_string(locked_url)}; "
        "names = a: if builtins.isAttrs a then builtins.attrNames a else []; "
        f"s = {nix_string(system)}; in {{ "
        "packages = names (f.packages.${s} or {}); apps = names (f.apps.${s} or {}); "
        "devShells = names (f.devShells.${s} or {}); "
        "nixosModules = names (f.nixosModules or {}); overlays = names (f.overlays or {}); }"
    )
    options = [*NETWORK_OPTIONS, *(["--offline"] if offline else [])]
    result = _run(
        nix_env.nix_argv("eval", "--json", "--impure", *options, "--expr", expression),
        env,
        timeout,
    )
    if not result.ok:
        raise _failure(
            ref,
            "Evaluating the outputs of",
            result.stderr,
            result.returncode,
            "Check that it is a llama.cpp flake and that it evaluates (`nix flake show` on it).",
        )
    try:
        answer = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise FlakeError(
            f"`nix eval` printed something that is not JSON for {ref}.",
            "Run `nix flake show` on it yourself to see what Nix says.",
        ) from None
    outputs = FlakeOutputs(
        ref=ref,
        system=system,
        packages=sorted(answer.get("packages", [])),
        apps=sorted(answer.get("apps", [])),
        dev_shells=sorted(answer.get("devShells", [])),
        nixos_modules=sorted(answer.get("nixosModules", [])),
        overlays=sorted(answer.get("overlays", [])),
        locked_url=locked_url,
        revision=revision,
        offline=offline,
    )
    if revision:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = cache_file.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps(asdict(outputs)))
            temporary.replace(cache_file)
        except OSError:
            pass  # no cache is slower, never wrong
    return outputs
