"""Metrics: perplexity, throughput (kernel and lm-eval metrics join as their issues land)."""
