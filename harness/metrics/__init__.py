"""Metrics: perplexity, throughput, lm-eval task scores (lm_eval.py); kernel metrics join as their issue lands."""
