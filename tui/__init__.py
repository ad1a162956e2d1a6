"""llama-wizard: the application layer (CLI, Textual app, plan, shared widgets)."""

__version__ = "0.1.0"
