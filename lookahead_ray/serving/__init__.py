"""Serving-side code with no Ray inside: load a router checkpoint and score prompts."""
