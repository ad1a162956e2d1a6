"""Download a model's GGUF file(s) from the Hugging Face Hub into the cache llama.cpp reads with
`-hf`, with progress, a disk-space check, resume, and errors a person can act on.

Where: llama.cpp's own order (common/hf-cache.cpp of the pinned llama.cpp): $LLAMA_CACHE,
$HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub,
~/.cache/huggingface/hub, in the Hub's layout (models--OWNER--NAME/blobs/<etag>, snapshots/
<commit>/<file> -> ../../blobs/<etag>, refs/<revision>): what huggingface_hub writes and what
`llama-server -hf` finds, so a file pulled here is never fetched again by either.

huggingface_hub does the Hub's part: the file's URL (HF_ENDPOINT), its metadata (commit, etag,
size; a HEAD that follows the Hub's redirects), the auth header (HF_TOKEN or a saved login: only
ever sent to the Hub's host) and the HTTP session. The transfer itself is ours: hf_hub_download
(2.4) writes to a temporary name unique to each process and deletes it on any failure, so a
download broken off by Ctrl-C, a dropped SSH session or a reboot would start again from zero.
Here the partial file is `blobs/<etag>.incomplete`, a name that is never presented as the model
(only a complete, size- and sha256-checked blob is renamed into place and linked from the
snapshot), and the next attempt resumes it with an HTTP Range request. The lock file is the one
huggingface_hub takes (.locks/models--OWNER--NAME/<etag>.lock), so the two never write one blob
at once.

No printing, no Textual: progress goes to a callback; errors are ActionableErrors."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_wizard.models.errors import ModelError
from llama_wizard.models.quant import shard_names, split_name

if TYPE_CHECKING:
    from llama_wizard.models.choose import ModelChoice

CHUNK = 1 << 20
TIMEOUT = 30.0
RETRIES = 5  # network errors in a row (each retry resumes where the last one stopped)
MIN_MARGIN = 128 << 20  # kept free beside the file: the filesystem, logs, the next write
PROGRESS_EVERY = 0.2  # seconds between progress callbacks (plus one at each file's end)
RATE_WINDOW = 5.0  # seconds the transfer rate is averaged over
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Errors of writing the partial file (never the network's): no retry, the person must act.
_LOCAL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)


class DownloadError(ModelError):
    """A model file could not be downloaded."""


class DownloadAccessDenied(DownloadError):
    """401/403: a gated or private repository (or no such one, as the Hub answers anonymously)."""


class NotEnoughSpace(DownloadError):
    """The cache's filesystem has less room than the file needs."""


class DownloadOffline(DownloadError):
    """HF_HUB_OFFLINE is set and the file is not in the cache."""


class DownloadCancelled(DownloadError):
    """Stopped on request; the partial file is kept and the next attempt resumes it."""


# --- where ---------------------------------------------------------------------------------------


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The Hub cache llama.cpp's -hf reads (common/hf-cache.cpp): $LLAMA_CACHE, $HF_HUB_CACHE,
    $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/
    hub. Downloads go there, so that llama.cpp finds them too."""
    env = os.environ if env is None else env
    for name, below in (("LLAMA_CACHE", ""), ("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""),
                        ("HF_HOME", "hub"), ("XDG_CACHE_HOME", "huggingface/hub")):  # fmt: skip
        if env.get(name):
            base = Path(env[name]).expanduser()
            return base / below if below else base
    return Path(env.get("HOME") or Path.home()) / ".cache" / "huggingface" / "hub"


def _cache_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """Where a downloaded file may already be: llama.cpp's -hf cache, and huggingface_hub's own
    (they differ when LLAMA_CACHE is set)."""
    from llama_wizard.models.local import hf_cache_dir

    dirs = [cache_dir(env), hf_cache_dir(dict(os.environ if env is None else env))]
    return list(dict.fromkeys(dirs))


def _storage(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


# --- what ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubTarget:
    """The files of one quant in a Hub repository. `files` may be a folder (`Q8_0/`, a
    catalogue entry that names only where its split parts are): the listing says which."""

    repo: str
    quant: str
    files: tuple[str, ...]
    revision: str | None = None

    @property
    def spec(self) -> str:
        return f"{self.repo}:{self.quant}"

    @property
    def page(self) -> str:
        from llama_wizard.models.remote import hub_endpoint

        return f"{hub_endpoint()}/{self.repo}"


def hub_target(choice: ModelChoice) -> HubTarget | None:
    """What to download for a model choice, or None when llama.cpp is not given it from the Hub
    (a local .gguf path, an http(s) URL)."""
    if choice.source_args()[:1] != ["-hf"]:
        return None
    report = getattr(choice, "report", None)
    revision = getattr(getattr(report, "source", None), "revision", None)
    files = tuple(f for f in choice.files if f)
    return HubTarget(choice.repo, choice.quant, files, revision)


def _all_shards(files: tuple[str, ...]) -> tuple[str, ...] | None:
    """Every part of the named files (a split's first part names them all); None when a name
    is a folder, so the listing must say."""
    if not files or any(not f.lower().endswith(".gguf") for f in files):
        return None
    names: list[str] = []
    for file in files:
        names += shard_names(file) if split_name(file) else [file]
    return tuple(dict.fromkeys(names))


def _commit_for(storage: Path, revision: str | None) -> str | None:
    revision = revision or "main"
    if _COMMIT.match(revision):
        return revision
    ref = storage / "refs" / revision
    with contextlib.suppress(OSError):
        return ref.read_text().strip() or None
    return None


def _cached_in(cache: Path, target: HubTarget) -> list[Path] | None:
    storage = _storage(cache, target.repo)
    commit = _commit_for(storage, target.revision)
    if commit is None:
        return None
    snapshot = storage / "snapshots" / commit
    names = _all_shards(target.files)
    if names is None:
        # A folder: its parts, found by name in the snapshot, all of them there.
        folder = next((f for f in target.files if not f.lower().endswith(".gguf")), "")
        found = sorted((snapshot / folder).glob("*.gguf")) if folder else []
        firsts = [p for p in found if (s := split_name(p.name)) is not None and s.index == 1]
        if not firsts:
            return None
        names = tuple(
            str(Path(folder) / Path(n).name) for n in shard_names(str(firsts[0].name))
        )
    paths = [snapshot / name for name in names]
    # A snapshot link whose blob is gone (pruned) is not a cached file.
    if all(p.is_file() for p in paths):
        return paths
    return None


def cached_paths(target: HubTarget, env: Mapping[str, str] | None = None) -> list[Path] | None:
    """The target's files when every one is in a cache (first part first), else None."""
    for cache in _cache_dirs(env):
        found = _cached_in(cache, target)
        if found is not None:
            return found
    return None


def cached_model_path(choice: ModelChoice) -> str | None:
    """The local path llama.cpp should load (`-m`, the first part of a split) when the choice's
    Hub file is in the cache; None otherwise. A few stat calls: no network."""
    target = hub_target(choice)
    if target is None:
        return None
    paths = cached_paths(target)
    return str(paths[0]) if paths else None


# --- progress ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a download stands: the file being fetched and the whole quant's bytes."""

    file: str
    file_index: int  # 1-based
    file_count: int
    done_bytes: int  # of all files (those already there included)
    total_bytes: int
    bytes_per_second: float | None
    phase: str = "downloading"  # "checking" while a resumed part's hash is read again

    @property
    def eta_seconds(self) -> float | None:
        if not self.bytes_per_second:
            return None
        return max(self.total_bytes - self.done_bytes, 0) / self.bytes_per_second

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "bytes_per_second": None
            if self.bytes_per_second is None
            else round(self.bytes_per_second),
        }


@dataclass
class Downloaded:
    repo: str
    quant: str
    revision: str | None
    paths: list[Path]
    bytes: int
    fetched_bytes: int = 0  # what this run transferred (0: everything was there)

    @property
    def path(self) -> Path:
        """What llama.cpp loads: the file, or a split's first part."""
        return self.paths[0]


class _Rate:
    """Bytes per second over the last RATE_WINDOW seconds."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> float | None:
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW:
            self.samples.popleft()
        first_time, first_total = self.samples[0]
        if now - first_time < 0.05:
            return None
        return (total - first_total) / (now - first_time)


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(progress: Progress) -> str:
    """One line, as plain mode and `pull` print it: file, bytes, percent, rate, ETA."""
    part = f" (part {progress.file_index}/{progress.file_count})" if progress.file_count > 1 else ""
    if progress.phase == "checking":
        return f"{progress.file}{part}: checking the part downloaded before…"
    rate = progress.bytes_per_second
    return (
        f"{progress.file}{part}: {format_bytes(progress.done_bytes)} of "
        f"{format_bytes(progress.total_bytes)} ({progress.fraction:.0%})"
        + (f", {format_bytes(rate)}/s, {format_eta(progress.eta_seconds)} left" if rate else "")
    )


# --- the download --------------------------------------------------------------------------------


@dataclass
class _Remote:
    name: str
    url: str
    commit: str
    etag: str
    size: int


def _access_denied(target: HubTarget, status: int | str) -> DownloadAccessDenied:
    token_set = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))
    with_token = (
        "The token in HF_TOKEN has no access to it: request access on that page with the account "
        "the token belongs to, or use a token of an account that has it"
        if token_set
        else "Then create a read token at https://huggingface.co/settings/tokens and set it "
        "before starting llama-wizard again: `export HF_TOKEN=hf_...` (it is never written to "
        "the wizard's logs, settings or printed commands)"
    )
    return DownloadAccessDenied(
        f"The Hugging Face Hub refused access to {target.repo} (HTTP {status}): the repository is "
        "gated or private (or does not exist).",
        f"Request access on its page, {target.page} (log in and accept its terms). "
        f"{with_token}.",
    )


def _hub_error(error: BaseException, target: HubTarget, name: str) -> DownloadError:
    from llama_wizard.models.remote import _network_error, hub_endpoint

    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    code = response.headers.get("X-Error-Code") if response is not None else None
    if status in (401, 403) or type(error).__name__ == "GatedRepoError":
        return _access_denied(target, status or 401)
    if status == 404:
        if code in ("RepoNotFound",):
            return DownloadError(
                f"There is no repository {target.repo} on {hub_endpoint()}.",
                "Check the name (owner/name, as in the model page's URL).",
            )
        return DownloadError(
            f"{target.repo} has no file {name}"
            + (f" at revision {target.revision}" if target.revision else "")
            + " (HTTP 404).",
            f"Check the quant and the files on {target.page} (`llama-wizard fit {target.repo}` "
            "lists its quants).",
        )
    if status is not None:
        return DownloadError(
            f"The Hub answered HTTP {status} for {target.repo}/{name}.",
            "Try again later (the download resumes where it stopped); if it persists, check "
            "HF_ENDPOINT and HF_TOKEN.",
        )
    if _network_error(error):
        return DownloadError(
            f"The Hugging Face Hub ({hub_endpoint()}) was not reached for {target.repo}: "
            f"{type(error).__name__}: {error}.",
            "Check the network (or HF_ENDPOINT / a proxy) and try again: the download resumes "
            "where it stopped.",
        )
    raise error


def _metadata(target: HubTarget, name: str) -> _Remote:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    from llama_wizard.models.remote import hub_endpoint

    endpoint = hub_endpoint()
    url = hf_hub_url(target.repo, name, revision=target.revision or "main", endpoint=endpoint)
    from llama_wizard.models.remote import _network_error

    # A network error is asked again twice, briefly (huggingface_hub's own backoff would keep a
    # Hub that is not there at all waiting half a minute); an HTTP answer is final.
    for attempt in range(3):
        try:
            meta = get_hf_file_metadata(url, timeout=TIMEOUT, endpoint=endpoint)
            break
        except Exception as error:
            if attempt < 2 and _network_error(error) and getattr(error, "response", None) is None:
                time.sleep(1.0 + attempt)
                continue
            raise _hub_error(error, target, name) from None
    if not meta.commit_hash or not meta.etag or meta.size is None:
        raise DownloadError(
            f"{endpoint} did not say the commit, etag and size of {target.repo}/{name}.",
            "HF_ENDPOINT must point at a Hugging Face Hub (or a mirror that sends X-Repo-Commit, "
            "ETag and the file's size).",
        )
    return _Remote(name, url, meta.commit_hash, meta.etag, int(meta.size))


def _list_folder(target: HubTarget) -> tuple[str, ...]:
    """The files of a quant named by folder (or not at all): from the repository's listing."""
    from llama_wizard.models.errors import HubError
    from llama_wizard.models.hub import list_repo

    try:
        listing = list_repo(target.repo, target.revision)
    except HubError as error:
        if "gated" in error.message:
            raise _access_denied(target, 401) from None
        raise
    entry = listing.find(target.quant)
    folders = [f for f in target.files if not f.lower().endswith(".gguf")]
    if folders:
        entry = next(
            (q for q in listing.quants if any(q.first.startswith(d) for d in folders)), entry
        )
    if entry is None:
        raise DownloadError(
            f"{target.repo} has no {target.quant} file.",
            f"Choose one of: {', '.join(q.quant for q in listing.quants) or 'none'}.",
        )
    if not entry.complete:
        raise DownloadError(
            f"{target.repo} lacks some parts of the split file {entry.first}.",
            "Choose another quant; the repository's owner must upload the missing parts.",
        )
    return tuple(f.path for f in entry.files)


def check_space(directory: Path, needed: int) -> None:
    """Raise NotEnoughSpace unless `directory`'s filesystem has `needed` bytes plus a margin."""
    margin = max(MIN_MARGIN, needed // 100)
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + margin:
        raise NotEnoughSpace(
            f"Not enough disk space in {directory}: the download needs "
            f"{format_bytes(needed)} (plus {format_bytes(margin)} to spare), and only "
            f"{format_bytes(free)} is free there.",
            "Free some space there, or download to a disk with room: set HF_HUB_CACHE to a "
            "folder on it (`export HF_HUB_CACHE=/data/hf-cache`; LLAMA_CACHE, if set, wins for "
            "llama.cpp, so set that one instead) and start again.",
        )


def _prepare(cache: Path) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(
            f"The model cache {cache} cannot be created: {error.strerror or error}.",
            "Point HF_HUB_CACHE (or LLAMA_CACHE) at a writable folder and start again.",
        ) from None


def _hash_of(path: Path, cancel: threading.Event | None) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK * 8):
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled("The download was stopped.", "Start it again to resume.")
            digest.update(chunk)
    return digest


def download(
    target: HubTarget,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> Downloaded:
    """Every file of the target in the cache (downloading what is missing), first part first.

    Raises DownloadOffline (HF_HUB_OFFLINE and not cached), DownloadAccessDenied (401/403),
    NotEnoughSpace (checked before anything is written), DownloadCancelled (`cancel` was set:
    the partial file stays, named .incomplete, and the next call resumes it), DownloadError."""
    from llama_wizard.models.hub import offline

    cached = cached_paths(target, env)
    if cached is not None:
        total = sum(p.stat().st_size for p in cached)
        if on_progress is not None:
            on_progress(Progress(cached[0].name, len(cached), len(cached), total, total, None))
        return Downloaded(target.repo, target.quant, target.revision, cached, total)
    if offline():
        raise DownloadOffline(
            f"HF_HUB_OFFLINE is set, and {target.spec} is not in the cache ({cache_dir(env)}).",
            "Unset HF_HUB_OFFLINE to download it, or copy the .gguf file here and give its path "
            "(--model /path/to/file.gguf).",
        )
    names = _all_shards(target.files) or _list_folder(target)
    remotes = [_metadata(target, name) for name in names]
    cache = cache_dir(env)
    storage = _storage(cache, target.repo)
    blobs = storage / "blobs"
    total = sum(r.size for r in remotes)
    have = 0
    missing = 0
    for remote in remotes:
        blob = blobs / remote.etag
        if blob.is_file():
            have += remote.size
        else:
            partial = blob.with_name(remote.etag + ".incomplete")
            done = partial.stat().st_size if partial.is_file() else 0
            have += min(done, remote.size)
            missing += max(remote.size - done, 0)
    check_space(cache, missing)
    _prepare(blobs)
    state = _Transfer(total, have, on_progress, cancel, len(remotes))
    paths = []
    for index, remote in enumerate(remotes, 1):
        state.file, state.index = remote.name, index
        paths.append(_fetch(target, storage, remote, state))
    return Downloaded(target.repo, target.quant, target.revision, paths, total, state.fetched)


@dataclass
class _Transfer:
    total: int
    done: int
    on_progress: Callable[[Progress], None] | None
    cancel: threading.Event | None
    count: int
    file: str = ""
    index: int = 1
    fetched: int = 0
    rate: _Rate = field(default_factory=_Rate)
    last: float = 0.0
    speed: float | None = None

    def report(self, phase: str = "downloading", force: bool = False) -> None:
        now = time.monotonic()
        self.speed = self.rate.add(now, self.fetched) or self.speed
        if self.on_progress is None or (not force and now - self.last < PROGRESS_EVERY):
            return
        self.last = now
        self.on_progress(
            Progress(self.file, self.index, self.count, self.done, self.total, self.speed, phase)
        )

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled(
                f"The download of {self.file} was stopped; the part downloaded so far is kept.",
                "Start it again (`llama-wizard pull`, or the wizard): it resumes where it stopped.",
            )


def _fetch(target: HubTarget, storage: Path, remote: _Remote, state: _Transfer) -> Path:
    """One file into blobs/<etag> (resuming its .incomplete part), linked from the snapshot."""
    from huggingface_hub.utils import WeakFileLock

    blob = storage / "blobs" / remote.etag
    pointer = storage / "snapshots" / remote.commit / remote.name
    lock = storage.parent / ".locks" / storage.name / f"{remote.etag}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if not blob.is_file():
            _transfer(target, remote, blob, state)
        else:
            state.report(force=True)
        _link(pointer, blob)
        if target.revision != remote.commit:
            ref = storage / "refs" / (target.revision or "main")
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(remote.commit)
    return pointer


def _link(pointer: Path, blob: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_file():
        return
    with contextlib.suppress(FileNotFoundError):
        pointer.unlink()  # a dangling link left by a pruned blob
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symlinks on this filesystem: huggingface_hub then copies too
        shutil.copyfile(blob, pointer)


def _transfer(target: HubTarget, remote: _Remote, blob: Path, state: _Transfer) -> None:
    from llama_wizard.models.remote import _headers_for, _network_error, _session

    partial = blob.with_name(blob.name + ".incomplete")
    verify = bool(_SHA256.match(remote.etag))  # an LFS file's etag is its sha256
    if partial.is_file() and partial.stat().st_size > remote.size:
        partial.unlink()  # not this file's beginning
    done = partial.stat().st_size if partial.is_file() else 0  # counted in state.done already
    digest = hashlib.sha256()
    if done and verify:
        state.report("checking", force=True)
        digest = _hash_of(partial, state.cancel)
    failures = 0
    while done < remote.size:
        state.check_cancel()
        # The Hub's resolve URL each time (the CDN's signed links expire); the token goes to
        # the Hub's host only, and httpx drops it on the redirect to another host.
        headers = _headers_for(remote.url)
        headers["Accept-Encoding"] = "identity"
        if done:
            headers["Range"] = f"bytes={done}-"
        try:
            with _session().stream(
                "GET", remote.url, headers=headers, follow_redirects=True, timeout=TIMEOUT
            ) as response:
                if response.status_code == 416 and done:
                    break  # the part is the whole file already
                if response.status_code >= 400:
                    response.read()
                    from huggingface_hub.utils import hf_raise_for_status

                    hf_raise_for_status(response)
                restart = done and response.status_code == 200  # Range not honoured
                with partial.open("wb" if restart or not done else "ab") as handle:
                    if restart:
                        state.done -= done
                        done = 0
                        digest = hashlib.sha256()
                    # As it arrives (a chunk size would hold back what a dropped link already sent).
                    for chunk in response.iter_bytes():
                        state.check_cancel()
                        handle.write(chunk)
                        if verify:
                            digest.update(chunk)
                        done += len(chunk)
                        state.done += len(chunk)
                        state.fetched += len(chunk)
                        failures = 0
                        state.report()
        except DownloadError:
            raise
        except Exception as error:
            if type(error).__module__.startswith("huggingface_hub"):
                raise _hub_error(error, target, remote.name) from None
            if not _network_error(error):
                raise
            if isinstance(error, OSError) and error.errno in _LOCAL_ERRNOS:
                # A local write failed (the disk filled up after all): not the network's fault.
                raise DownloadError(
                    f"Writing {partial} failed: {error.strerror or error}.",
                    "Free space on that disk (or set HF_HUB_CACHE to a folder with room) and "
                    "start again: the download resumes.",
                ) from None
            failures += 1
            if failures > RETRIES:
                raise _hub_error(error, target, remote.name) from None
            time.sleep(min(0.5 * failures, 3.0))
            continue
        if done < remote.size:
            failures += 1  # the server ended the body early without an error: ask again
            if failures > RETRIES:
                break
    if done != remote.size:
        raise DownloadError(
            f"{remote.name} arrived with {done} bytes instead of {remote.size}.",
            "Start the download again: it resumes (the Hub or a proxy cut it short).",
        )
    if verify and digest.hexdigest() != remote.etag:
        partial.unlink()
        raise DownloadError(
            f"{remote.name} arrived damaged: its sha256 is not the Hub's ({remote.etag[:12]}…); "
            "the damaged copy was deleted.",
            "Start the download again.",
        )
    state.report(force=True)
    os.chmod(partial, 0o644 & ~_umask())
    os.replace(partial, blob)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- in the background ---------------------------------------------------------------------------


class DownloadJob:
    """A download running in a thread, for faces that show it while doing other things (the
    wizard's Build run step, plain mode while the build runs): the latest progress, the result
    or the error, and cancel(). Its state is read from any thread."""

    def __init__(self, target: HubTarget, env: Mapping[str, str] | None = None) -> None:
        self.target = target
        self.progress: Progress | None = None
        self.result: Downloaded | None = None
        self.error: DownloadError | None = None
        self._cancel = threading.Event()
        self._env = env
        self._thread = threading.Thread(target=self._run, daemon=True, name="model-download")

    def start(self) -> DownloadJob:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = download(
                self.target, on_progress=self._progress, cancel=self._cancel, env=self._env
            )
        except DownloadError as error:
            self.error = error
        except Exception as error:  # what nothing above foresaw: shown, never a silent thread
            self.error = DownloadError(
                f"The download of {self.target.spec} failed: {type(error).__name__}: {error}.",
                "Start it again (it resumes); if it fails the same way, report it.",
            )

    def _progress(self, progress: Progress) -> None:
        self.progress = progress

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()
