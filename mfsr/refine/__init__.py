"""Learned refinement after the kernel fusion (issue 5; in progress)."""
