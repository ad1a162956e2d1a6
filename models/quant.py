"""Quant tags in file names, split-file names, and the byte sizes of ggml types."""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf

# llama.cpp's own split naming (common/download.cpp, gguf-split): NAME-00001-of-00003.gguf
SPLIT_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

# The quant tag in a file name: llama.cpp's -hf matches `<tag>[.-]`, case-insensitively. The
# alternatives, longest first, cover llama.cpp's ftypes, unsloth's UD- dynamic quants, bartowski's
# _L/_XL variants, the ARM repacks and MXFP4.
_TAG_RE = re.compile(
    r"(?<![A-Za-z0-9])(?P<tag>"
    r"(?:UD-)?(?:"
    r"IQ[1-4]_(?:XXS|XS|NL|S|M)"
    r"|Q[2-8]_K(?:_(?:XXL|XL|L|M|S))?"
    r"|Q4_0_[48]_[48]"
    r"|Q[4-8]_[01]"
    r"|TQ[12]_0"
    r"|MXFP4(?:_MOE)?"
    r"|NVFP4"
    r"|BF16|FP16|F16|FP32|F32"
    r"))(?![A-Za-z0-9])",
    re.IGNORECASE,
)

# Files in a GGUF repository that are not a language model to run.
_NOT_A_MODEL = re.compile(r"(^|[/_.-])(mmproj|imatrix|mtp-|eagle3?-|draft)", re.IGNORECASE)


@dataclass(frozen=True)
class SplitName:
    prefix: str
    index: int
    count: int


def split_name(path: str) -> SplitName | None:
    """The parts of `NAME-00002-of-00003.gguf`, or None for a single-file GGUF."""
    name = path.rsplit("/", 1)[-1]
    match = SPLIT_RE.match(name)
    if not match:
        return None
    directory = path[: len(path) - len(name)]
    return SplitName(directory + match["prefix"], int(match["index"]), int(match["count"]))


def shard_names(path: str) -> list[str]:
    """All shard paths of a split GGUF, given any one of them (the path itself if not split)."""
    split = split_name(path)
    if split is None:
        return [path]
    return [f"{split.prefix}-{i:05d}-of-{split.count:05d}.gguf" for i in range(1, split.count + 1)]


def quant_tag(path: str) -> str | None:
    """The quant tag in a GGUF file name, upper-cased (`Q4_K_M`, `UD-Q4_K_XL`, `MXFP4`), or None.
    The last tag in the name wins (`Qwen3-8B-Q4_K_M.gguf`; a directory `Q8_0/` counts too)."""
    stem = path[:-5] if path.lower().endswith(".gguf") else path
    split = split_name(path)
    if split is not None:
        stem = split.prefix
    matches = list(_TAG_RE.finditer(stem))
    if not matches:
        return None
    tag = matches[-1]["tag"].upper()
    return {"FP16": "F16", "FP32": "F32"}.get(tag, tag)


def is_model_file(path: str) -> bool:
    """A GGUF that llama.cpp would load as the model (not a projector, imatrix or draft head)."""
    return path.lower().endswith(".gguf") and not _NOT_A_MODEL.search(path.rsplit("/", 1)[-1])


def normalize_quant(text: str) -> str:
    return text.strip().upper().replace("FP16", "F16")


# --- ggml types ----------------------------------------------------------------------------------


def type_by_name(name: str) -> gguf.GGMLQuantizationType:
    try:
        return gguf.GGMLQuantizationType[name.upper()]
    except KeyError:
        raise ValueError(f"unknown ggml type {name!r}") from None


def tensor_bytes(ggml_type: int, n_elements: int) -> int:
    """Bytes of a tensor of `n_elements` of a ggml type (gguf's GGML_QUANT_SIZES table)."""
    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    return -(-n_elements // block) * type_size


def bytes_per_element(ggml_type: int) -> float:
    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    return type_size / block


# KV cache types llama.cpp accepts for -ctk/-ctv (common/arg.cpp kv_cache_types).
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def cache_type(name: str) -> gguf.GGMLQuantizationType:
    if name.lower() not in CACHE_TYPES:
        raise ValueError(
            f"unknown KV cache type {name!r}; llama.cpp accepts {', '.join(CACHE_TYPES)}"
        )
    return type_by_name(name)


# The type llama.cpp's quantizer gives token_embd.weight for a file type (llama-quant.cpp: the
# ftype's default type). Checked against logs: Llama-3-8B Q4_K_M keeps a 281.81 MiB host buffer
# = 128256 x 4096 x 144/256 (Q4_K); Qwen3-Coder-30B Q8_0 315.30 MiB = 151936 x 2048 x 34/32.
# Quants not listed (IQ*, MXFP4, UD-*, BF16...) have recipes we cannot pin down without the
# header, and the estimate then keeps the whole file on the GPU (the safe side).
EMBEDDING_TYPE_FOR_QUANT = {
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q8_0": "Q8_0",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "F16": "F16",
    "F32": "F32",
}
