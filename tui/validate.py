"""One check per value a person can give the wizard, whatever face it comes through: a
command-line option, a saved setting, a plain-mode answer or a field of the full-screen wizard.

Each `check_*` takes what was typed (or loaded) and returns the value in its proper type, or
raises `InvalidValue` saying what is wrong and what to type instead. Nothing here imports the
heavy parts of the wizard, so argparse can use these checks without slowing `--help`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from llama_wizard.detect.errors import ActionableError

MIN_CTX = 256
MAX_CTX = 1 << 24  # 16M tokens: beyond any model's context, so a typo, not a choice
MAX_N_PREDICT = 1 << 20
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_QUANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOST = re.compile(r"^[A-Za-z0-9._:\[\]%-]+$")
PROGRAMS = ("llama-completion", "llama-server")
FLASH_ATTN = ("on", "off", "auto")
# llama.cpp's own spellings of -fa (common/arg.cpp is_truthy / is_falsey / is_autoy).
_FLASH_ATTN_WORDS = {
    **dict.fromkeys(("on", "enabled", "true", "1"), "on"),
    **dict.fromkeys(("off", "disabled", "false", "0"), "off"),
    **dict.fromkeys(("auto", "-1"), "auto"),
}
MAX_PARALLEL = 256  # llama.cpp's LLAMA_MAX_SEQ: n_seq_max must not exceed it


class InvalidValue(ActionableError):
    """A value that cannot be used, with what to give instead."""


def _whole_number(value: Any, what: str, example: str) -> int:
    if isinstance(value, bool):  # JSON true is an int to Python, never a number of tokens
        raise InvalidValue(f"{what} must be a whole number, not {value!r}.", f"Give {example}.")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
    raise InvalidValue(f"{what} must be a whole number, not {value!r}.", f"Give {example}.")


def check_ctx(value: Any) -> int:
    """A context size in tokens: a whole number from 256 up. (Above the model's training
    context is allowed: the fit says so as a warning, since RoPE scaling makes it work.)"""
    ctx = _whole_number(value, "The context size", "a number of tokens such as 8192 or 32768")
    if ctx < MIN_CTX or ctx > MAX_CTX:
        raise InvalidValue(
            f"The context size must be between {MIN_CTX} and {MAX_CTX} tokens, not {ctx}.",
            "Give a number of tokens such as 8192 or 32768.",
        )
    return ctx


def check_n_predict(value: Any) -> int:
    count = _whole_number(value, "The number of tokens to generate", "a number such as 128")
    if not 1 <= count <= MAX_N_PREDICT:
        raise InvalidValue(
            f"The number of tokens to generate must be between 1 and {MAX_N_PREDICT}, not {count}.",
            "Give a number such as 128.",
        )
    return count


def check_port(value: Any) -> int:
    port = _whole_number(value, "The port", "a TCP port such as 8080")
    if not 1 <= port <= 65535:
        raise InvalidValue(f"{port} is not a TCP port (1-65535).", "Give a port such as 8080.")
    return port


def _text(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(f"{what} must be some text, not {value!r}.", f"Give {example}.")
    return value.strip()


def check_host(value: Any) -> str:
    host = _text(value, "The address to listen on", "an address such as 127.0.0.1 or 0.0.0.0")
    if not _HOST.match(host):
        raise InvalidValue(
            f"{host!r} is not an address to listen on.",
            "Give an IP address or host name such as 127.0.0.1 or 0.0.0.0.",
        )
    return host


def check_prompt(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidValue(
            f"The prompt must be some text, not {value!r}.",
            "Type a prompt such as 'The capital of France is'.",
        )
    return value


def check_program(value: Any) -> str:
    if value not in PROGRAMS:
        raise InvalidValue(
            f"{value!r} is not a program the wizard launches.", f"Choose {' or '.join(PROGRAMS)}."
        )
    return str(value)


def check_flake(value: Any) -> str:
    return _text(value, "The flake", "a path or a reference such as github:ggml-org/llama.cpp")


def check_output(value: Any) -> str:
    name = _text(value, "The flake output", "an output name such as default or rocm-gfx906")
    if not _OUTPUT_NAME.match(name):
        raise InvalidValue(
            f"{name!r} is not a flake output name.", "Give one such as default or rocm-gfx906."
        )
    return name


def check_model(value: Any) -> str:
    return _text(value, "The model", "a .gguf path, an https:// URL or owner/repo[:QUANT]")


def check_quant(value: Any) -> str:
    quant = _text(value, "The quant", "a quant such as Q4_K_M")
    if not _QUANT_NAME.match(quant):
        raise InvalidValue(f"{quant!r} is not a quant name.", "Give one such as Q4_K_M or Q8_0.")
    return quant


def check_flash_attn(value: Any) -> str:
    """Flash attention as llama.cpp's `-fa` takes it: on, off or auto (also its other spellings:
    enabled/true/1, disabled/false/0, -1; and JSON true/false)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    word = value.strip().lower() if isinstance(value, str) else value
    if isinstance(word, str) and word in _FLASH_ATTN_WORDS:
        return _FLASH_ATTN_WORDS[word]
    raise InvalidValue(
        f"Flash attention is on, off or auto, not {value!r}.",
        "Give -fa on, -fa off, or -fa auto (llama.cpp's default: on where the backend supports "
        "it).",
    )


def check_parallel(value: Any) -> int:
    """llama-server's slots (`-np N`): a whole number from 1 to 256."""
    count = _whole_number(value, "The number of server slots", "a number such as 1 or 4")
    if not 1 <= count <= MAX_PARALLEL:
        raise InvalidValue(
            f"The number of server slots must be between 1 and {MAX_PARALLEL}, not {count}.",
            "Give a number such as 1 or 4.",
        )
    return count


def check_gpus(value: Any) -> list[int]:
    """GPU indices: a list of whole numbers from 0 (an empty list means the CPU), or text such
    as "0,1"."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
            raise InvalidValue(
                f"{value!r} is not a list of GPU indices.", "Give indices such as 0 or 0,1."
            )
        return list(dict.fromkeys(int(p) for p in parts))
    if isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        return list(dict.fromkeys(value))
    raise InvalidValue(
        f"{value!r} is not a list of GPU indices.", "Give indices such as [0] or [0, 1]."
    )


def argparse_type(check: Callable[[Any], Any]) -> Callable[[str], Any]:
    """A check as an argparse `type=`: the message of a bad value becomes argparse's error."""
    import argparse

    def convert(text: str) -> Any:
        try:
            return check(text)
        except InvalidValue as error:
            raise argparse.ArgumentTypeError(f"{error.message} {error.fix}") from None

    convert.__name__ = check.__name__.removeprefix("check_")
    return convert


def problem(check: Callable[[Any], Any], value: Any) -> str | None:
    """What is wrong with value (for a prompt or a field to show), or None."""
    try:
        check(value)
    except InvalidValue as error:
        return f"{error.message} {error.fix}"
    return None
