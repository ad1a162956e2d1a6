"""Several servers, one model: llama.cpp's RPC backend planned, built, started and stopped
across hosts (`llama-wizard cluster`). No Textual, no printing: the faces show what these
modules return."""
