"""Loss, optimiser and learning-rate schedule of a run, built from its :class:`TrainConfig`."""

from __future__ import annotations

import torch
from torch import nn

from hierars import losses
from hierars.hierarchy import Hierarchy
from hierars.training.config import TrainConfig

__all__ = ["build_loss", "build_optimizer", "build_scheduler", "PolyLR"]


def build_loss(cfg: TrainConfig, hierarchy: Hierarchy) -> nn.Module:
    """Loss module for ``cfg.loss``: "ce" → HierarchicalCELoss, "hsc" → HSCLoss(mu), "hssn" → HSSNLoss."""
    if cfg.loss == "ce":
        return losses.HierarchicalCELoss()
    if cfg.loss == "hsc":
        return losses.HSCLoss(hierarchy, mu=cfg.mu)
    return losses.HSSNLoss(hierarchy)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over trainable parameters; no weight decay on biases, norms and scalars.

    Uses the fused implementation when every parameter is a float tensor on CPU or CUDA.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # PyTorch's own fused kernels (CPU and CUDA): one kernel per step instead of a Python loop of ~6 ops per
    # parameter tensor, the same update up to float rounding (tests/test_training.py). On the default FPN-64
    # step the AdamW update took 19-30 ms of a 0.11-0.19 s step and takes 7-9 ms fused (benchmarks/bench_bhccm.py,
    # `optimizer_s`); the whole step is 14.9 ms [2.3, 27.5] faster (benchmarks/bench_step_ab.py --lever optimizer).
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    kw = {"fused": True} if fused else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **kw)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **kw)


class PolyLR:
    """LR factor at step ``t``: linear warm-up, then ``(1 - t'/T')**power`` decaying to ``min_lr``.

    A picklable callable for ``LambdaLR`` (closed form, so a resumed schedule is exact).
    """

    def __init__(self, iterations: int, power: float, warmup_iters: int = 0, min_ratio: float = 0.0,
                 warmup_ratio: float = 1e-3) -> None:
        self.iterations, self.power, self.warmup_iters = iterations, power, warmup_iters
        self.min_ratio, self.warmup_ratio = min_ratio, warmup_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_iters:
            return self.warmup_ratio + (1.0 - self.warmup_ratio) * step / self.warmup_iters
        span = max(1, self.iterations - self.warmup_iters)
        frac = min(1.0, (step - self.warmup_iters) / span)
        return (1.0 - frac) ** self.power * (1.0 - self.min_ratio) + self.min_ratio


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration poly schedule (mmseg ``PolyLR`` semantics) with optional linear warm-up."""
    fn = PolyLR(cfg.iterations, cfg.poly_power, cfg.warmup_iters, min_ratio=cfg.min_lr / cfg.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
