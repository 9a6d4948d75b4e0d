"""lookahead-ray: response-aware LLM routing (Lookahead, arXiv 2510.19506) on Ray."""

__version__ = "0.1.0"
