"""Atomic file writes for index files and checkpoints (temp file in the same folder + ``os.replace``).

Uses :mod:`hierars.atomic` when the package has it; the local version below is the same algorithm.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes"]

try:  # the project-wide helper (hierars/atomic.py), once it exists
    from hierars.atomic import atomic_write_bytes  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised until hierars.atomic lands

    def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:  # type: ignore[misc]
        """Write ``data`` to ``path`` atomically: temp file beside it, fsync, ``os.replace``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
