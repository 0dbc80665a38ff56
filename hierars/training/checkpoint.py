"""Training checkpoints: atomic save, ``weights_only`` load, and the check that a resume keeps the settings.

A checkpoint (``ckpt.pt``) holds the model, optimiser, scheduler and scaler states, the iteration, the run's
settings, the tree's name and class counts, the RNG states, the curve so far and, once finished, the metrics;
a run's checkpoint also holds what makes the model self-contained (:func:`run_metadata`: the whole tree, the band
names and order, the normalisation statistics, the architecture, the package version), which
:func:`hierars.load_model` reads.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hierars.atomic import atomic_write_bytes
from hierars.data.saved_model import model_metadata
from hierars.hierarchy import Hierarchy
from hierars.training.config import TrainConfig

__all__ = ["save_checkpoint", "load_checkpoint", "check_resume_config", "RESUME_FREE_FIELDS", "run_metadata",
           "model_spec"]

#: Config fields that may change between a checkpoint and a resumed run without changing the result.
RESUME_FREE_FIELDS = frozenset(
    {"eval_interval", "ckpt_interval", "log_interval", "num_workers", "num_threads", "eval_batch_size",
     "jsps", "seeds", "max_val_samples", "progress", "seed_workers"}
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


def model_spec(cfg: TrainConfig, in_channels: int) -> dict[str, Any]:
    """``hierars.models.build_model``'s arguments for a run (what :func:`hierars.training.build_run_model` builds)."""
    return {"arch": cfg.arch, "encoder": cfg.encoder, "in_channels": int(in_channels), "head": cfg.head,
            "fusion": cfg.fusion, "decoder_channels": cfg.decoder_channels, "dropout": cfg.dropout,
            "upsample_logits": cfg.upsample_logits}


def _base(ds: Any) -> Any:
    """The dataset under ``Subset``-like wrappers (``.dataset``)."""
    seen = 0
    while hasattr(ds, "dataset") and seen < 10:
        ds, seen = ds.dataset, seen + 1
    return ds


def _values(v: Any) -> list[float] | None:
    if v is None:
        return None
    return [float(x) for x in torch.as_tensor(v, dtype=torch.float64).reshape(-1)]


def run_metadata(cfg: TrainConfig, hierarchy: Hierarchy, in_channels: int, train_ds: Any, val_ds: Any = None,
                 rebuildable: bool = True) -> dict[str, Any]:
    """The self-contained model keys of a run's checkpoint (:func:`hierars.data.saved_model.model_metadata`).

    Band names, source band indexes, nodata, the normalisation (mean / std as the dataset applies them) and the
    tile size are read from the training dataset (a :class:`hierars.data.GeoTiffDataset` has them all; a
    dataset without them gives None: unnamed bands, raw values). ``rebuildable=False`` marks a model that
    ``build_model`` cannot rebuild from ``cfg`` (a custom ``build`` in :func:`hierars.training.train_run`).
    """
    base = _base(train_ds)
    mean, std = _values(getattr(base, "mean", None)), _values(getattr(base, "std", None))
    data = {"source": cfg.source, "data_dir": cfg.data_dir, "tile_size": getattr(base, "tile_size", None),
            "n_train": len(train_ds), "n_val": None if val_ds is None else len(val_ds),
            "n_train_rasters": len(base.items) if hasattr(base, "items") else None,
            "n_val_rasters": len(_base(val_ds).items) if val_ds is not None and hasattr(_base(val_ds), "items")
            else None}
    return model_metadata(hierarchy, model_spec(cfg, in_channels) if rebuildable else None,
                          band_names=getattr(base, "band_names", None), mean=mean, std=std,
                          band_indexes=getattr(base, "band_indexes", None),
                          nodata=getattr(base, "image_nodata", None), data=data)
