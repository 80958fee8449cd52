"""Corpus building, manifests and domain transforms for speechkd."""
