"""Training checkpoints: atomic save, ``weights_only`` load, and the check that a resume keeps the settings.

A checkpoint (``ckpt.pt``) holds the model, optimiser, scheduler and scaler states, the iteration, the run's
settings, the tree's name and class counts, the RNG states, the curve so far and, once finished, the metrics.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hierars.atomic import atomic_write_bytes
from hierars.training.config import TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint", "check_resume_config", "RESUME_FREE_FIELDS"]

#: Config fields that may change between a checkpoint and a resumed run without changing the result.
RESUME_FREE_FIELDS = frozenset(
    {"eval_interval", "ckpt_interval", "log_interval", "num_workers", "num_threads", "eval_batch_size",
     "jsps", "seeds", "max_val_samples", "progress"}
)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` into memory, then an atomic write: a crash never leaves a half-written file."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`hierars.training.fit` (``weights_only=True``: tensors and plain Python).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is truncated, not a torch file, or not a hierars checkpoint (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # zip/pickle errors of a damaged file
        raise ValueError(f"{path} is not a readable checkpoint (truncated or not written by torch.save): {e}"
                         ) from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} is not a hierars checkpoint (got a {type(state).__name__})")
    missing = {"model", "iteration", "config"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a hierars checkpoint (missing keys {sorted(missing)})")
    return dict(state)


def check_resume_config(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Raise if ``cfg`` differs from the checkpoint's settings in a field that changes the result."""
    now = cfg.model_dump()
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in RESUME_FREE_FIELDS and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume from {path}: the training settings changed ({detail}); "
                         "delete the checkpoint or call fit(..., resume=False)")
