"""Flake knowledge and the build runner. No Textual, no printing: data in, data out."""
