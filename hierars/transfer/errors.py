"""The error type of :mod:`hierars.transfer`: bad mappings, mismatched source models, wrong band counts."""

from __future__ import annotations

__all__ = ["TransferError"]


class TransferError(ValueError):
    """A TransLU set-up that cannot work; the message names the file, node, field or module at fault."""
