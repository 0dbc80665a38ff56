"""Transfer runs: the five Table X variants trained with :func:`~hierars.training.fit` and aggregated over seeds.

Variants (HieraRS paper Table X; all with the target tree's BHCCM and the run's iteration budget and seeds):

- ``scratch``: a single-branch model from random initialisation (:func:`build_run_model`), HSC loss;
- ``finetune``: the single branch initialised from the source encoder (:func:`hierars.transfer.finetune_model`),
  HSC loss;
- ``cdks``: TransLU with CDKS only, HSC loss on the target ground truth;
- ``cdsa``: TransLU with CDSA only, HSC loss on hybrid targets (:class:`hierars.transfer.TransLULoss`);
- ``translu``: CDKS + CDSA, hybrid targets.

Layout written by :func:`train_transfer_variant` (like :func:`hierars.training.train_run`)::

    models_dir/transfer_<experiment>/<variant>/seed<k>/{ckpt.pt, metrics.json, curve.csv}
    reports_dir/metrics/transfer_<experiment>_<variant>.json    mean and half-range over seeds
    reports_dir/plots/transfer_<experiment>_<variant>_curve.csv
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hierars.hierarchy import Hierarchy
from hierars.training.checkpoint import load_checkpoint
from hierars.training.config import TrainConfig
from hierars.training.optim import build_loss
from hierars.training.resume import RESUME_FOLDER
from hierars.training.runs import build_run_model, train_run
from hierars.transfer import (
    CrossDomainMapping,
    TransferError,
    TransLU,
    TransLULoss,
    describe_model,
    finetune_model,
)

__all__ = ["VARIANTS", "build_transfer_variant", "train_transfer_variant", "run_transfer_table",
           "load_transfer_model"]

#: Table X rows, in the paper's order.
VARIANTS = ("scratch", "finetune", "cdks", "cdsa", "translu")


def _check_arch(source_model: nn.Module, cfg: TrainConfig) -> None:
    info = describe_model(source_model)
    if (info["arch"], info["encoder"]) != (cfg.arch.lower(), cfg.encoder):
        raise TransferError(f"the source model is {info['arch']}/{info['encoder']} but the run trains "
                            f"{cfg.arch}/{cfg.encoder}; every Table X variant must share the architecture")


def build_transfer_variant(variant: str, source_model: nn.Module, target_hierarchy: Hierarchy,
                           mapping: CrossDomainMapping | str | Path, cfg: TrainConfig, in_channels: int
                           ) -> tuple[nn.Module, nn.Module]:
    """(model, loss_fn) of one Table X variant. Seed first: new decoders, heads and BIUs draw from the RNG."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    _check_arch(source_model, cfg)
    if variant == "scratch":
        return build_run_model(cfg.model_copy(update={"pretrained": None}), target_hierarchy, in_channels), \
            build_loss(cfg, target_hierarchy)
    if variant == "finetune":
        model = finetune_model(source_model, target_hierarchy, fusion=cfg.fusion, dropout=cfg.dropout)
        return model, build_loss(cfg, target_hierarchy)
    cdks, cdsa = variant in ("cdks", "translu"), variant in ("cdsa", "translu")
    model = TransLU(source_model, target_hierarchy, mapping, cdks=cdks, cdsa=cdsa, in_channels=in_channels,
                    fusion=cfg.fusion, dropout=cfg.dropout)
    return model, TransLULoss(model, mu=cfg.mu, hybrid=cdsa)


def train_transfer_variant(experiment: str, variant: str, source_model: nn.Module, target_hierarchy: Hierarchy,
                           mapping: CrossDomainMapping | str | Path, cfg: TrainConfig, train_ds: Dataset,
                           val_ds: Dataset | None, *, models_dir: str | os.PathLike, reports_dir: str | os.PathLike,
                           resume: bool = True) -> dict[str, Any]:
    """Train one variant for every seed of ``cfg.seed_list`` with :func:`fit`; aggregate (mean ± half-range).

    Returns: {"experiment", "variant", "per_seed": [metrics...], "aggregate": {...}, "ckpts": [paths]}.
    """
    if not experiment or any(c in experiment for c in "/\\ "):
        raise ValueError(f"experiment name must be a plain non-empty name, got {experiment!r}")

    def build(seed_cfg: TrainConfig, in_channels: int) -> tuple[nn.Module, nn.Module]:
        return build_transfer_variant(variant, source_model, target_hierarchy, mapping, seed_cfg, in_channels)

    # periodic checkpoints outside the DVC output models/transfer_<experiment> (which DVC deletes before the
    # stage runs), so an interrupted transfer stage resumes: models/.resume/transfer_<experiment>/<variant>/...
    res = train_run(variant, cfg, target_hierarchy, train_ds, val_ds, models_dir=Path(models_dir) / f"transfer_{experiment}",
                    reports_dir=reports_dir, resume=resume, build=build, report_name=f"transfer_{experiment}_{variant}",
                    resume_root=Path(models_dir) / RESUME_FOLDER / f"transfer_{experiment}")
    return {"experiment": experiment, "variant": variant, "per_seed": res["per_seed"], "aggregate": res["aggregate"],
            "ckpts": res["ckpts"]}


def run_transfer_table(experiment: str, source_model: nn.Module, target_hierarchy: Hierarchy,
                       mapping: CrossDomainMapping | str | Path, cfg: TrainConfig, train_ds: Dataset,
                       val_ds: Dataset | None, *, variants: Sequence[str] = VARIANTS,
                       models_dir: str | os.PathLike, reports_dir: str | os.PathLike, resume: bool = True
                       ) -> dict[str, dict[str, Any]]:
    """Every Table X variant at the same iteration budget and seeds: {variant: train_transfer_variant(...)}."""
    return {v: train_transfer_variant(experiment, v, source_model, target_hierarchy, mapping, cfg, train_ds, val_ds,
                                      models_dir=models_dir, reports_dir=reports_dir, resume=resume)
            for v in variants}


def load_transfer_model(ckpt_path: str | os.PathLike, variant: str, source_model: nn.Module,
                        target_hierarchy: Hierarchy, mapping: CrossDomainMapping | str | Path, in_channels: int,
                        device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a variant's model from its :func:`fit` checkpoint (settings from the checkpoint), eval mode."""
    state = load_checkpoint(ckpt_path, map_location=device)
    cfg = TrainConfig.model_validate(state["config"])
    model, _ = build_transfer_variant(variant, source_model, target_hierarchy, mapping, cfg, in_channels)
    model.load_state_dict(state["model"])
    return model.to(device).eval()
