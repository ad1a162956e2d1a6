"""Model downloads (models/download.py) against a stand-in Hub on 127.0.0.1 (tests/hub_server.py,
through HF_ENDPOINT): real huggingface_hub metadata and HTTP, real files in a real cache."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_wizard.models.download import (
    DownloadAccessDenied,
    DownloadCancelled,
    DownloadError,
    DownloadJob,
    DownloadOffline,
    HubTarget,
    NotEnoughSpace,
    Progress,
    cache_dir,
    cached_paths,
    download,
    progress_line,
)
from tests.fixtures.models.gguf_helpers import split_parts
from tests.gguf_factory import write_gguf as write_model
from tests.hub_server import (  # noqa: F401  (fixture_NAME provides the pytest fixture NAME)
    HubServer,
    fixture_hub,
    hub_server,
)

REPO = "someone/Tiny-GGUF"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(directory))
    return directory


def _model(tmp_path: Path) -> bytes:
    return write_model(tmp_path / "src" / "Tiny-Q8_0.gguf").read_bytes()


def test_cache_dir_follows_llama_cpp_order(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert cache_dir(home) == tmp_path / ".cache/huggingface/hub"
    assert cache_dir({**home, "XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert cache_dir({**home, "HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/h/hub")
    assert cache_dir({**home, "HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == Path("/c")
    # llama.cpp's -hf reads LLAMA_CACHE first (common/hf-cache.cpp): so does the download.
    assert cache_dir({**home, "LLAMA_CACHE": "/l", "HF_HUB_CACHE": "/c"}) == Path("/l")


def test_a_gguf_downloads_into_the_hub_layout_with_progress(
    tmp_path: Path, hub: HubServer, cache: Path
) -> None:
    data = _model(tmp_path)
    sha = hub.add(REPO, {"Tiny-Q8_0.gguf": data, "README.md": b"hi"})
    target = HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",))
    assert cached_paths(target) is None
    events: list[Progress] = []
    result = download(target, on_progress=events.append)
    expected = cache / "models--someone--Tiny-GGUF" / "snapshots" / sha / "Tiny-Q8_0.gguf"
    assert result.path == expected and result.paths == [expected]
    assert expected.read_bytes() == data and expected.is_symlink()
    assert (cache / "models--someone--Tiny-GGUF" / "refs" / "main").read_text() == sha
    assert result.bytes == result.fetched_bytes == len(data)
    assert not list(cache.rglob("*.incomplete"))
    # Progress: never backwards, ending at the whole file.
    done = [e.done_bytes for e in events]
    assert done == sorted(done) and done[-1] == len(data)
    assert all(e.total_bytes == len(data) and e.file == "Tiny-Q8_0.gguf" for e in events)
    assert "Tiny-Q8_0.gguf" in progress_line(events[-1]) and "100%" in progress_line(events[-1])
    assert cached_paths(target) == [expected]
    # Again: nothing is fetched.
    before = len(hub.gets())
    again = download(target)
    assert again.path == expected and again.fetched_bytes == 0 and len(hub.gets()) == before


def test_a_split_gguf_downloads_every_part_and_launches_with_the_first(
    tmp_path: Path, hub: HubServer, cache: Path
) -> None:
    one, two = split_parts(tmp_path)
    names = ["Q8_0/Tiny-Q8_0-00001-of-00002.gguf", "Q8_0/Tiny-Q8_0-00002-of-00002.gguf"]
    hub.add(REPO, {names[0]: one, names[1]: two})
    events: list[Progress] = []
    # Named by its first part (as a fit of the Hub listing does), or only by its folder (as
    # some catalogue entries are): every part comes.
    result = download(HubTarget(REPO, "Q8_0", (names[0],)), on_progress=events.append)
    assert [p.name for p in result.paths] == [Path(n).name for n in names]
    assert result.path.name.endswith("-00001-of-00002.gguf")
    assert result.path.read_bytes() == one and result.paths[1].read_bytes() == two
    assert result.bytes == len(one) + len(two)
    assert {e.file_count for e in events} == {2} and events[-1].done_bytes == result.bytes
    assert cached_paths(HubTarget(REPO, "Q8_0", ("Q8_0/",))) == result.paths


def test_a_split_named_by_its_folder_is_listed_then_downloaded(
    tmp_path: Path, hub: HubServer, cache: Path
) -> None:
    one, two = split_parts(tmp_path)
    names = ["Q8_0/Tiny-Q8_0-00001-of-00002.gguf", "Q8_0/Tiny-Q8_0-00002-of-00002.gguf"]
    hub.add(REPO, {names[0]: one, names[1]: two})
    result = download(HubTarget(REPO, "Q8_0", ("Q8_0/",)))
    assert [p.read_bytes() for p in result.paths] == [one, two]
    assert any(r.path.startswith(f"/api/models/{REPO}") for r in hub.log)


def test_a_gated_repo_says_where_to_ask_and_how_to_set_the_token(
    tmp_path: Path, hub: HubServer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("meta/Gated-GGUF", {"Gated-Q4_K_M.gguf": b"x" * 100}, gated=True)
    target = HubTarget("meta/Gated-GGUF", "Q4_K_M", ("Gated-Q4_K_M.gguf",))
    with pytest.raises(DownloadAccessDenied) as error:
        download(target)
    assert "meta/Gated-GGUF" in error.value.message and "401" in error.value.message
    assert f"{hub.url}/meta/Gated-GGUF" in error.value.fix
    assert "export HF_TOKEN=" in error.value.fix
    monkeypatch.setenv("HF_TOKEN", "hf_secretsecretsecretsecretsecretsecret1")
    with pytest.raises(DownloadAccessDenied) as again:
        download(target)
    assert "token in HF_TOKEN has no access" in again.value.fix
    assert "hf_secret" not in again.value.message + again.value.fix
    assert not cache.exists() or not list(cache.rglob("*.gguf*"))


def test_a_dropped_connection_resumes_with_a_range_request(
    tmp_path: Path, hub: HubServer, cache: Path
) -> None:
    data = _model(tmp_path)
    hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    cut = len(data) // 3
    hub.state.drop_after["Tiny-Q8_0.gguf"] = cut
    result = download(HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",)))
    assert result.path.read_bytes() == data
    ranges = [r.range for r in hub.gets()]
    assert ranges == [None, f"bytes={cut}-"], ranges
    assert result.fetched_bytes == len(data)


def test_a_stopped_download_leaves_no_file_presented_as_complete_and_resumes(
    tmp_path: Path, hub: HubServer, cache: Path
) -> None:
    data = _model(tmp_path)
    hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    hub.state.throttle = 0.02  # about 3 MiB/s: stopped well before the end
    target = HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",))
    cancel = threading.Event()

    def stop_half_way(progress: Progress) -> None:
        if progress.done_bytes > len(data) // 4:
            cancel.set()

    with pytest.raises(DownloadCancelled, match="resumes"):
        download(target, on_progress=stop_half_way, cancel=cancel)
    (partial,) = cache.rglob("*.incomplete")
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    # Nothing a launch would take for the model: no snapshot entry, no blob by its own name.
    assert cached_paths(target) is None
    assert not list(cache.rglob("snapshots/*/*.gguf"))
    assert [p for p in (cache / "models--someone--Tiny-GGUF" / "blobs").iterdir()] == [partial]
    hub.state.throttle = 0
    events: list[Progress] = []
    result = download(target, on_progress=events.append)
    assert result.path.read_bytes() == data
    assert hub.gets()[-1].range == f"bytes={kept}-"
    assert result.fetched_bytes == len(data) - kept
    assert not list(cache.rglob("*.incomplete"))


def test_a_damaged_download_is_refused_and_deleted(
    tmp_path: Path, hub: HubServer, cache: Path
) -> None:
    data = _model(tmp_path)
    hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    hub.state.corrupt.add("Tiny-Q8_0.gguf")
    target = HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",))
    with pytest.raises(DownloadError, match="damaged"):
        download(target)
    assert cached_paths(target) is None and not list(cache.rglob("*.incomplete"))


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a 1 MiB tmpfs needs root")
def test_a_full_disk_is_refused_before_anything_is_fetched(
    tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _model(tmp_path)
    hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    with _tmpfs(tmp_path / "small", "1m") as small:
        target_dir = small / "hub"
        monkeypatch.setenv("HF_HUB_CACHE", str(target_dir))
        with pytest.raises(NotEnoughSpace) as error:
            download(HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",)))
        assert str(target_dir) in error.value.message
        assert "HF_HUB_CACHE" in error.value.fix and "free there" in error.value.message
        assert hub.gets() == []  # refused before a byte was asked for
        assert not list(small.rglob("*.incomplete"))


def test_offline_with_the_file_cached_needs_no_network(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _model(tmp_path)
    target = HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",))
    with hub_server() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.add(REPO, {"Tiny-Q8_0.gguf": data})
        downloaded = download(target)
    # The server is gone, and HF_HUB_OFFLINE is set: the cached file is the answer.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = download(target)
    assert result.path == downloaded.path and result.fetched_bytes == 0
    with pytest.raises(DownloadOffline, match="HF_HUB_OFFLINE") as error:
        download(HubTarget(REPO, "Q4_K_M", ("Tiny-Q4_K_M.gguf",)))
    assert "Unset HF_HUB_OFFLINE" in error.value.fix


def test_llama_cpp_cache_wins_and_a_file_in_the_hf_cache_is_found(
    tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _model(tmp_path)
    hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "llama"))
    result = download(HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",)))
    assert result.path.is_relative_to(tmp_path / "llama")


def test_download_job_runs_in_the_background(tmp_path: Path, hub: HubServer, cache: Path) -> None:
    data = _model(tmp_path)
    hub.add(REPO, {"Tiny-Q8_0.gguf": data})
    job = DownloadJob(HubTarget(REPO, "Q8_0", ("Tiny-Q8_0.gguf",))).start()
    assert job.wait(30) and job.done and job.error is None
    assert job.result is not None and job.result.path.read_bytes() == data
    assert job.progress is not None and job.progress.done_bytes == len(data)
    failing = DownloadJob(HubTarget(REPO, "Q2_K", ("Tiny-Q2_K.gguf",))).start()
    assert failing.wait(30) and isinstance(failing.error, DownloadError)
    assert "no file Tiny-Q2_K.gguf" in failing.error.message
