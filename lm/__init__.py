"""Runs the language model and its logits processors."""
