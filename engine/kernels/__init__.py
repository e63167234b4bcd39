"""Attention kernels for the paged KV cache: Triton on GPU, with pure-torch references that also serve CPU."""
