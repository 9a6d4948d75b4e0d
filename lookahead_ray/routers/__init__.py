"""Routers: every router scores candidates; routing itself is shared code in base.py."""
