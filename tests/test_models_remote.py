"""Ranged GGUF header reads and Hub listings against servers on 127.0.0.1 (no internet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_wizard.models.errors import (
    GgufError,
    HubOffline,
    HubUnreachable,
    QuantNotFound,
    RemoteError,
    RepoNotFound,
)
from llama_wizard.models.hub import group_files
from llama_wizard.models.remote import FIRST_RANGE, GROWTH, fetch_header
from llama_wizard.models.source import resolve_model
from tests.fixtures.models.gguf_helpers import F16, fake_hub, llama_tensors, serve, write_gguf


def _model_bytes(tmp_path: Path, vocab: int, name: str = "m.gguf") -> bytes:
    meta = {
        "block_count": 2,
        "context_length": 4096,
        "embedding_length": 64,
        "attention.head_count": 8,
        "attention.head_count_kv": 2,
    }
    tensors = llama_tensors(2, 64, 8, 2, 8, 64, vocab)
    # Padding tensor data so the file is much larger than its header: it must not be fetched.
    tensors["blk.1.pad.weight"] = ((4096, 1024), F16)
    return write_gguf(tmp_path / name, "llama", meta, tensors, vocab).read_bytes()


def test_small_header_is_read_in_one_request_without_tensor_data(tmp_path: Path) -> None:
    data = _model_bytes(tmp_path, 300)
    with serve() as server:
        server.files["/m.gguf"] = data
        header, stats = fetch_header(server.url + "/m.gguf")
    assert header.file_bytes == len(data)
    assert header.metadata["llama.block_count"] == 2
    assert stats.requests == len(server.log) == 1
    assert server.log[0].range == f"bytes=0-{FIRST_RANGE - 1}"
    assert stats.bytes_received == sum(r.bytes_sent for r in server.log) == FIRST_RANGE
    assert len(data) > 4 * FIRST_RANGE


def test_large_header_grows_the_range_geometrically_and_stays_bounded(tmp_path: Path) -> None:
    data = _model_bytes(tmp_path, 150_000)  # ~1.6 MB of vocabulary, like a real tokenizer
    header_size = len(data) - 4096 * 1024 * 2 - 200_000
    with serve() as server:
        server.files["/big.gguf"] = data
        header, stats = fetch_header(server.url + "/big.gguf")
    assert len(header.metadata["tokenizer.ggml.tokens"]) == 150_000
    assert stats.requests == len(server.log) == 2
    # Each request asks only for bytes not yet held.
    assert server.log[1].range == f"bytes={FIRST_RANGE}-{FIRST_RANGE * GROWTH - 1}"
    assert sum(r.bytes_sent for r in server.log) == FIRST_RANGE * GROWTH
    assert 4 * max(header.data_offset, header_size) > FIRST_RANGE * GROWTH


def test_a_server_without_range_support_is_refused_without_reading_the_file(tmp_path: Path) -> None:
    data = _model_bytes(tmp_path, 300)
    with serve(ranges=False) as server:
        server.files["/m.gguf"] = data
        with pytest.raises(RemoteError, match="does not support range requests") as error:
            fetch_header(server.url + "/m.gguf")
    assert "path" in error.value.fix
    assert len(server.log) == 1 and server.log[0].status == 200


def test_truncated_file_and_non_gguf_give_clear_errors(tmp_path: Path) -> None:
    data = _model_bytes(tmp_path, 150_000)
    with serve() as server:
        server.files["/cut.gguf"] = data[:500_000]
        server.files["/page.gguf"] = b"<!DOCTYPE html><html><body>Sign in</body></html>"
        server.files["/empty.gguf"] = b""
        with pytest.raises(GgufError, match="truncated"):
            fetch_header(server.url + "/cut.gguf")
        with pytest.raises(GgufError, match="not a GGUF"):
            fetch_header(server.url + "/page.gguf")
        with pytest.raises(GgufError, match="empty"):
            fetch_header(server.url + "/empty.gguf")
        with pytest.raises(RemoteError, match="404"):
            fetch_header(server.url + "/nothing.gguf")
    assert len(server.log) == 4


def test_unreachable_url_is_a_remote_error() -> None:
    with serve() as server:
        url = server.url
    with pytest.raises(RemoteError, match="Could not read"):
        fetch_header(url + "/m.gguf")


def test_url_model_spec_reads_the_header(tmp_path: Path) -> None:
    data = _model_bytes(tmp_path, 300)
    with serve() as server:
        server.files["/dir/tiny-Q6_K.gguf"] = data
        source = resolve_model(server.url + "/dir/tiny-Q6_K.gguf")
    assert source.kind == "url" and source.candidates[0].quant == "Q6_K"
    assert source.candidates[0].file_bytes == len(data)
    assert source.fetch is not None and source.fetch.requests == 1


def test_group_files_groups_splits_and_reads_quant_tags() -> None:
    quants, projectors = group_files(
        [
            ("README.md", 10),
            ("Q8_0/M-Q8_0-00002-of-00003.gguf", 200),
            ("Q8_0/M-Q8_0-00001-of-00003.gguf", 300),
            ("Q8_0/M-Q8_0-00003-of-00003.gguf", 100),
            ("M-UD-Q4_K_XL.gguf", 400),
            ("M-Q4_K_M.gguf", 350),
            ("mmproj-M-F16.gguf", 50),
            ("BF16/M-BF16-00001-of-00002.gguf", 500),
        ]
    )
    by_tag = {q.quant: q for q in quants}
    assert set(by_tag) == {"Q8_0", "UD-Q4_K_XL", "Q4_K_M", "BF16"}
    assert [f.path for f in by_tag["Q8_0"].files] == [
        "Q8_0/M-Q8_0-00001-of-00003.gguf",
        "Q8_0/M-Q8_0-00002-of-00003.gguf",
        "Q8_0/M-Q8_0-00003-of-00003.gguf",
    ]
    assert by_tag["Q8_0"].bytes == 600 and by_tag["Q8_0"].complete
    assert not by_tag["BF16"].complete
    assert [p.path for p in projectors] == ["mmproj-M-F16.gguf"]
    assert [q.quant for q in quants] == ["Q4_K_M", "UD-Q4_K_XL", "BF16", "Q8_0"]


def test_fake_hub_listing_and_ranged_read_of_a_split_quant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = {
        "block_count": 2,
        "context_length": 4096,
        "embedding_length": 64,
        "attention.head_count": 8,
        "attention.head_count_kv": 2,
    }
    first = {"token_embd.weight": ((300, 64), F16), "blk.0.attn_k.weight": ((16, 64), F16)}
    second = {"blk.1.attn_k.weight": ((16, 64), F16), "output.weight": ((300, 64), F16)}
    part1 = write_gguf(tmp_path / "a.gguf", "llama", meta, first, 300, (0, 2)).read_bytes()
    part2 = write_gguf(tmp_path / "b.gguf", "llama", meta, second, 0, (1, 2)).read_bytes()
    repo, sha = "someone/Tiny-GGUF", "c0ffee" + "0" * 34
    with serve() as server:
        fake_hub(
            server,
            repo,
            {
                "README.md": 100,
                "Q8_0/Tiny-Q8_0-00001-of-00002.gguf": part1,
                "Q8_0/Tiny-Q8_0-00002-of-00002.gguf": part2,
                "Tiny-Q4_K_M.gguf": 9_000_000_000,
            },
            sha,
        )
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_test_token")
        source = resolve_model(f"{repo}:Q8_0")
        with pytest.raises(QuantNotFound, match="Q4_K_M"):
            resolve_model(f"{repo}:Q2_K")
        every = resolve_model(repo)
        with pytest.raises(RepoNotFound):
            resolve_model("nobody/Missing-GGUF")
    (candidate,) = source.candidates
    assert source.kind == "hub" and source.revision == sha
    assert candidate.quant == "Q8_0" and len(candidate.files) == 2
    assert candidate.layout.layers == [16 * 64 * 2, 16 * 64 * 2]
    assert candidate.file_bytes == len(part1) + len(part2)
    assert [c.quant for c in every.candidates] == ["Q8_0", "Q4_K_M"]
    assert not every.candidates[1].layout.exact  # estimated from the listed size
    paths = [r.path.split("?")[0] for r in server.log]
    assert f"/api/models/{repo}" in paths
    assert f"/{repo}/resolve/{sha}/Q8_0/Tiny-Q8_0-00001-of-00002.gguf" in paths
    # The token goes to the Hub's own host only, and never into our errors.
    api = [r for r in server.log if r.path.startswith("/api/")]
    assert all(r.headers.get("authorization") == "Bearer hf_secret_test_token" for r in api)


def test_offline_and_unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubOffline, match="not asked") as error:
        resolve_model("someone/Unknown-GGUF")
    assert "catalogue" in error.value.fix
    # The catalogue still answers.
    assert resolve_model("ggml-org/gpt-oss-20b-GGUF").kind == "catalogue"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with serve() as server:
        url = server.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(HubUnreachable, match="was not reached"):
        resolve_model("someone/Unknown-GGUF")
