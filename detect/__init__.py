"""Hardware detection: GPUs, CPU and RAM. No Textual, no printing: an Inventory and warnings."""
