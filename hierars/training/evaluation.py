"""Evaluation: per-level metrics of a model on a dataset for several decoding modes, and sample predictions.

One forward pass per batch serves every mode (``"argmax"``, ``"jsps"``, ``"hssn"``); logits are resized to
the mask by :func:`hierars.levels.upsample_logits` and decoded by :func:`hierars.decoding.predict_levels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from hierars.decoding import MODES, predict_levels
from hierars.hierarchy import Hierarchy
from hierars.levels import as_level_list, upsample_logits
from hierars.metrics import HierarchicalMetrics
from hierars.training.distributed import DistInfo, current
from hierars.training.sampling import pad_collate, subset

__all__ = ["evaluate_modes", "evaluate", "flatten_modes", "predict_samples"]


@torch.no_grad()
def evaluate_modes(model: nn.Module, dataset: Dataset, hierarchy: Hierarchy,
                   modes: Sequence[str] = ("argmax", "jsps"), *, batch_size: int = 8, num_workers: int = 0,
                   device: str | torch.device | None = None, progress: bool = True,
                   max_samples: int | None = None, distributed: bool = False) -> dict[str, dict[str, float]]:
    """Evaluate once per batch for several inference modes (one forward pass each batch).

    Logits are upsampled bilinearly to the mask size; ``hierars.inference.predict_levels`` turns
    them into B×L×H×W predictions (a flat model's finest prediction is lifted through the tree);
    ``hierars.metrics.HierarchicalMetrics`` accumulates per-level confusion matrices.
    With ``distributed=True`` (every rank of a ``torch.distributed`` job calls it) rank ``r`` of ``W`` evaluates
    samples ``r, r+W, ...`` and the confusion matrices are all-reduced: every rank returns the whole set's metrics.

    Returns:
        {mode: HierarchicalMetrics.to_flat_dict()} (e.g. keys mIoU_L1.., OA_L3, consistency).
    """
    if not modes:
        raise ValueError("evaluate needs at least one mode")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown inference mode {m!r}; expected one of {MODES}")
    dataset = subset(dataset, max_samples)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the evaluation dataset is empty")
    info = current() if distributed else DistInfo()
    if info.enabled:
        dataset = Subset(dataset, range(info.rank, len(dataset), info.world_size))  # type: ignore[arg-type]
    if device is None:
        device = next(iter(model.parameters())).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=pad_collate, generator=torch.Generator().manual_seed(0))
    meters = {m: HierarchicalMetrics(hierarchy) for m in modes}
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="eval", leave=False, disable=not progress, mininterval=2.0):
            image, mask = batch["image"].to(device), batch["mask"]
            logits = upsample_logits(as_level_list(model(image)), tuple(mask.shape[-2:]))
            for m in modes:
                meters[m].update(predict_levels(logits, hierarchy, mode=m).cpu(), mask)
    finally:
        model.train(was_training)
    if info.enabled:
        for meter in meters.values():
            meter.all_reduce()
    return {m: {k: float(v) for k, v in meters[m].to_flat_dict().items()} for m in modes}


def evaluate(model: nn.Module, dataset: Dataset, hierarchy: Hierarchy, mode: str = "argmax",
             **kwargs: Any) -> dict[str, float]:
    """Per-level metrics of ``model`` on ``dataset`` with one inference mode ("argmax" or "jsps").

    Keyword arguments go to :func:`evaluate_modes` (batch_size, num_workers, device, progress, max_samples).
    """
    return evaluate_modes(model, dataset, hierarchy, (mode,), **kwargs)[mode]


def flatten_modes(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{"argmax": {k: v}, "jsps": {k: v}} → {k: v, k_jsps: v}."""
    out: dict[str, float] = {}
    for mode, vals in results.items():
        suffix = "" if mode == "argmax" else f"_{mode}"
        out.update({f"{k}{suffix}": v for k, v in vals.items()})
    return out


@torch.no_grad()
def predict_samples(model: nn.Module, dataset: Dataset, hierarchy: Hierarchy, indices: Sequence[int],
                    modes: Sequence[str] = ("argmax", "jsps")) -> list[dict[str, Any]]:
    """Predictions of a few samples for figures (``hierars.plotting.plot_prediction_levels``).

    Returns a list of {"image": C×H×W, "mask": L×H×W, "preds": {mode: L×H×W}, "title": str}.
    """
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in indices:
            sample = dataset[int(i)]
            batch = pad_collate([sample])
            logits = upsample_logits(as_level_list(model(batch["image"].to(device))), tuple(batch["mask"].shape[-2:]))
            h, w = sample["mask"].shape[-2:]
            preds = {m: predict_levels(logits, hierarchy, mode=m)[0, :, :h, :w].cpu() for m in modes}
            meta = sample.get("meta", {}) or {}
            title = str(meta.get("scene") or Path(str(meta.get("path", f"sample {i}"))).stem)
            out.append({"image": sample["image"], "mask": sample["mask"], "preds": preds, "title": f"{i}: {title}"})
    finally:
        model.train(was_training)
    return out
