"""Inference engines, the rules that pick one, and (later) the model cache."""
