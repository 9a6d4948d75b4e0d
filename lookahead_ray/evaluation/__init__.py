"""Evaluation: native benchmark metrics of a routed system, and the evaluate command."""
