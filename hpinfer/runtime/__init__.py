"""Inference engines, the rules that pick one, and the model cache with its builders (precision, shapes).

loader (choose → build or reuse → guard → fall back) · auto_config (rules) · builder (cache keys, artifacts) ·
cache (entries, locking, checksums) · calibration / quantize / accuracy (reduced precision) · shapes (bounds) ·
commands (``hpinfer build`` / ``hpinfer cache``).
"""
