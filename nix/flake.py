"""Asking a real flake which outputs it has, cached per flake revision.

Evaluating upstream llama.cpp's outputs means fetching and evaluating nixpkgs, which is slow, so
the answer is cached under the flake's locked hash: a new revision asks again, the same one never
does. `nix flake metadata` (cheap: it fetches only the flake's own source) gives that hash.
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
from llama_wizard.nix.errors import FlakeError, NixNotFound

UPSTREAM_FLAKE = "github:ggml-org/llama.cpp"
CACHE_VERSION = 1


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


def _metadata(ref: str, nix_env: NixEnvironment, env, timeout: float) -> dict:
    result = _run(nix_env.nix_argv("flake", "metadata", "--json", ref), env, timeout)
    if not result.ok:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        offline = any(word in result.stderr for word in ("resolve host", "unable to download"))
        raise FlakeError(
            f"Could not read the flake {ref}: {detail[0][:200]}",
            "You seem to be offline: point --flake at a local llama.cpp checkout "
            "(`--flake ./llama.cpp`)."
            if offline
            else "Check the flake reference (`--flake github:OWNER/REPO`, `--flake ./dir`).",
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
    """The outputs `ref` offers for `system`. Raises FlakeError with a fix."""
    metadata = _metadata(ref, nix_env, env, timeout)
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
    result = _run(
        nix_env.nix_argv("eval", "--json", "--impure", "--expr", expression), env, timeout
    )
    if not result.ok:
        detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[0]
        raise FlakeError(
            f"Evaluating the outputs of {ref} failed: {detail[:300]}",
            "Check that it is a llama.cpp flake (`nix flake show` on it).",
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
