"""The error raised on invalid action data, statistics or saved tokenizer files."""

from __future__ import annotations

from ..errors import TelecorderError

__all__ = ["ActionError"]


class ActionError(TelecorderError, ValueError):
    """Invalid action data, statistics or tokenizer state.

    A ``ValueError`` for callers that validate data, and a ``TelecorderError`` so the
    CLI prints it as one readable line.
    """
