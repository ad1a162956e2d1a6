"""Model catalogue, GGUF metadata and the memory estimate. No Textual, no printing."""
