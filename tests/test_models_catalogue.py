"""The shipped catalogue: every number has a source, names and sizes agree."""

from __future__ import annotations

from llama_wizard.models.catalogue import load_catalogue
from llama_wizard.models.quant import quant_tag, split_name

REQUIRED = {
    "arch",
    "n_layer",
    "n_embd",
    "n_head",
    "n_head_kv",
    "key_length",
    "n_vocab",
    "context_length",
}


def test_every_architecture_number_and_file_size_has_a_source() -> None:
    catalogue = load_catalogue()
    assert len(catalogue.models) >= 15
    for model in catalogue.models:
        arch = model.architecture
        assert set(arch) >= REQUIRED, model.repo
        sourced = {name for source in model.sources for name in source["for"]}
        numbers = set(arch) - {"arch", "swa_pattern"}
        assert numbers <= sourced, (model.repo, numbers - sourced)
        if model.flags:
            assert "flags" in sourced, model.repo
        model.arch()  # the numbers are consistent (swa_pattern gives swa_layers)
        for quant in model.quants:
            assert quant.sources, (model.repo, quant.quant)
            assert quant.bytes > 0
            if quant.files:
                assert quant.bytes == sum(f.bytes for f in quant.files)
                for file in quant.files:
                    assert (quant_tag(file.path) or "").upper() == quant.quant.upper(), file.path
                counts = {split_name(f.path).count for f in quant.files if split_name(f.path)}
                assert counts in (set(), {len(quant.files)}), file.path
            else:
                assert quant.split_dir and quant.bytes_precision


def test_the_reference_models_and_recommended_list_are_present() -> None:
    catalogue = load_catalogue()
    for repo in (
        "Qwen/Qwen3-0.6B-GGUF",
        "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
        "ggml-org/gpt-oss-20b-GGUF",
    ):
        assert catalogue.find(repo.lower()) is not None
    assert all(catalogue.find(repo) for repo in catalogue.recommended)
    coder = catalogue.find("unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF")
    assert {"Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"} <= {q.quant for q in coder.quants}
