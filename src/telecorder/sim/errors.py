"""The simulation package's error type, in a module of its own so that every sim module can raise it
without importing the environment (which imports them)."""

from __future__ import annotations

__all__ = ["SimModelError"]


class SimModelError(ValueError):
    """A model file cannot be used: it does not load, compile, or fit the action convention."""
