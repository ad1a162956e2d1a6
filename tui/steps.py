"""The wizard's steps, in order: the one list every face (the full-screen wizard, plain mode,
`--yes`) walks through."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    key: str
    title: str


STEPS = (
    Step("hardware", "Hardware"),
    Step("build", "Build"),
    Step("model", "Model"),
    Step("build-run", "Build run"),
    Step("launch", "Launch"),
    Step("done", "Done"),
)
STEP_KEYS = tuple(step.key for step in STEPS)
STEP_TITLES = {step.key: step.title for step in STEPS}


def step_number(key: str) -> int:
    """1-based position of a step, as the faces show it ("Step 3/6")."""
    return STEP_KEYS.index(key) + 1
