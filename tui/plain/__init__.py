"""Plain mode (`llama-wizard --plain`, and what a dumb terminal gets) and scripted mode
(`llama-wizard --yes`): the wizard's steps as line-by-line prompts, a thin face over the flow
core (tui/session.py).

- prompters.py: how a question is asked (arrow-key menus, numbered lines, or `--yes`'s
  defaults);
- wizard.py: `PlainWizard`, which walks tui/steps.py's steps, shows what the session knows and
  asks; `run_plain`, the entry point with its exit statuses (0 quit or done, 1 failed or no
  input, 130 Ctrl-C)."""

from llama_wizard.tui.plain.prompters import (
    BACK,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_INPUT,
    EXIT_QUIT,
    OTHER,
    QUIT,
    AutoPrompter,
    LinePrompter,
    NoInput,
    Option,
    Prompter,
    QuestionaryPrompter,
    Quit,
    choose_prompter,
    questionary_style,
)
from llama_wizard.tui.plain.wizard import PlainWizard, StepFailed, run_plain

__all__ = [
    "BACK",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_INPUT",
    "EXIT_QUIT",
    "OTHER",
    "QUIT",
    "AutoPrompter",
    "LinePrompter",
    "NoInput",
    "Option",
    "PlainWizard",
    "Prompter",
    "QuestionaryPrompter",
    "Quit",
    "StepFailed",
    "choose_prompter",
    "questionary_style",
    "run_plain",
]
