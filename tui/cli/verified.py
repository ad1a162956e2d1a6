"""llama.cpp's own word for `plan --verify` and `fit --verify`: ask it (tui.verify, through the
session or a bin directory), and print the answer beside the estimate or put it in the JSON
document under "verify".

Asking never fails the command: when llama.cpp cannot be asked (VerifyError: not built, no
llama-fit-params, the model not on this machine, a simulated machine, ...) the answer says so
and why, and the estimate still stands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_wizard.tui.verify import Agreement, FitVerdict, VerifyError

VERIFY_HELP = (
    "also ask llama.cpp itself (the built output's llama-fit-params) whether the model fits, "
    "and show its answer beside the estimate"
)


@dataclass
class Verified:
    """What asking llama.cpp gave: its verdict and how it compares with the estimate, or why
    it could not be asked (`error`)."""

    verdict: FitVerdict | None = None
    agreement: Agreement | None = None
    error: VerifyError | None = None
    quant: str | None = None  # what was asked about, when the command chose it (fit)
    ctx: int | None = None

    @classmethod
    def ask(cls, question: Callable[[], tuple[FitVerdict, Agreement]]) -> Verified:
        """Run `question` (session.verify, or verify_fit + compare); a VerifyError is kept."""
        from llama_wizard.tui.verify import VerifyError

        try:
            verdict, agreement = question()
        except VerifyError as error:
            return cls(error=error)
        return cls(verdict, agreement)

    @classmethod
    def refused(cls, error: VerifyError) -> Verified:
        return cls(error=error)

    def to_json(self) -> dict[str, Any]:
        """{"verdict", "agreement"}, or {"error": {"kind", "message", "fix"}}; fit adds the
        "quant" and "ctx" it asked about."""
        asked = {name: value for name, value in (("quant", self.quant), ("ctx", self.ctx)) if value}
        if self.verdict is None or self.agreement is None:
            error = self.error
            assert error is not None
            kind = type(error).__name__
            return {"error": {"kind": kind, "message": error.message, "fix": error.fix}, **asked}
        return {
            "verdict": self.verdict.to_json(),
            "agreement": self.agreement.to_json(),
            **asked,
        }

    def lines(self) -> list[tuple[str, str]]:
        """(text, style) for a person: llama.cpp's answer, and what the two disagree on; or
        why it was not asked and what to do."""
        if self.verdict is None or self.agreement is None:
            assert self.error is not None
            return [
                (f"llama.cpp not asked: {self.error.message}", "dim"),
                (self.error.fix, "dim"),
            ]
        if self.agreement.agree:
            return [(self.verdict.summary(), "")]
        return [
            (self.verdict.summary(), "bold"),
            (f"llama.cpp and the estimate disagree: {self.agreement.explanation}", "bold yellow"),
        ]


def print_verified(verified: Verified, before: str | None = None) -> None:
    """The lines, on stdout (not wrapped: a line is one answer, as scripts grep it)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    if before:
        console.print(Text(before, style="dim"), soft_wrap=True)
    for text, style in verified.lines():
        console.print(Text(text, style=style), soft_wrap=True)
