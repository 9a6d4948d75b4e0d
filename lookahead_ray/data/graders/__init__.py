"""Graders of one response: math (math-verify), code (sandboxed tests) and a reward model."""
