"""Triton kernels and their plain-torch references; imports nothing of ours."""
