"""Launching a cell: n worker processes at once, their supervision, NVIDIA MPS, the hardware probe, and progress while a sweep runs."""
