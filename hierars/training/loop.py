"""The training loop: seeded, iteration-based :func:`fit` with periodic evaluation and atomic checkpoints.

One run = one model, one loss, one seed, ``cfg.iterations`` optimiser steps::

    cfg = resolve_run(params["train"], "bhccm_hsc")          # TrainConfig (pydantic, extra="forbid")
    model = build_model(cfg.arch, cfg.encoder, in_channels, h, head=cfg.head, fusion=cfg.fusion)
    metrics = fit(model, build_loss(cfg, h), train_ds, val_ds, h, cfg, out_dir="models/bhccm_hsc/seed0")

Determinism: batches, per-sample transforms and the batch augmentation are pure functions of the seed and
the iteration (:mod:`hierars.training.sampling`); dropout uses the global torch RNG, whose state is
checkpointed with numpy's and Python's. On CPU, ``N`` straight iterations and ``N/2 + resume + N/2`` give
identical weights (``torch.equal``), whatever ``num_workers`` is.

Outputs in ``out_dir``: ``ckpt.pt`` (atomic), ``metrics.json`` (flat scalars per level; keys without suffix are
per-level argmax, ``_jsps`` keys use JSPS) and ``curve.csv`` (iteration, loss, lr, val_mIoU_L1 ...). With
``resume_dir``, the periodic checkpoints go there instead (a folder that survives ``dvc repro`` deleting
``out_dir``; :func:`hierars.training.train_run` chooses it) and ``out_dir`` gets the final one.

Stopping: SIGINT / SIGTERM finish the current step, write a checkpoint and raise
:class:`~hierars.training.signals.TrainingInterrupted` (its message says how to resume). NaN / inf in an input
batch or in the loss stops training with the iteration and the batch's files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from hierars.atomic import atomic_write_csv, atomic_write_json
from hierars.hierarchy import Hierarchy
from hierars.levels import as_level_list
from hierars.training import distributed
from hierars.training.allocator import retain_freed_memory
from hierars.training.checkpoint import check_resume_config, load_checkpoint, save_checkpoint
from hierars.training.config import TrainConfig
from hierars.training.distributed import DistInfo
from hierars.training.evaluation import evaluate_modes, flatten_modes
from hierars.training.guards import (
    batch_files,
    check_checkpoint_tree,
    check_finite_batch,
    link_or_remove,
    load_state_checked,
)
from hierars.training.optim import build_optimizer, build_scheduler
from hierars.training.sampling import IterationBatchSampler, SeededSamples, augment_batch, pad_collate, subset
from hierars.training.seeding import rng_state, seed_everything, set_rng_state
from hierars.training.signals import StopOnSignal, TrainingInterrupted, announce

__all__ = ["fit", "resolve_device"]

log = logging.getLogger(__name__)

LossFn = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; a CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def _batches(train_ds: Dataset, cfg: TrainConfig, start: int, info: DistInfo) -> DataLoader:
    """Batches for iterations ``start .. cfg.iterations - 1`` (deterministic in ``cfg.seed``; this rank's share)."""
    train_ds = subset(train_ds, cfg.max_train_samples)
    sampler = IterationBatchSampler(len(train_ds), cfg.batch_size, cfg.seed, cfg.iterations, start,  # type: ignore[arg-type]
                                    rank=info.rank, world_size=info.world_size)
    return DataLoader(SeededSamples(train_ds, cfg.seed), batch_sampler=sampler, num_workers=cfg.num_workers,
                      collate_fn=pad_collate, generator=torch.Generator().manual_seed(cfg.seed),
                      persistent_workers=False)


def _augmenter(cfg: TrainConfig, hierarchy: Hierarchy) -> nn.Module | None:
    if not cfg.augment:
        return None
    from hierars.data.transforms import SegAugment

    return SegAugment(scale=cfg.aug_scale, band_jitter=cfg.band_jitter, ignore_index=hierarchy.ignore_index)


def _eval_modes(cfg: TrainConfig) -> tuple[str, ...]:
    modes = ("argmax", "jsps") if cfg.jsps else ("argmax",)
    return modes + (("hssn",) if cfg.head == "hssn" else ())  # HSSN's own joint-softmax rule


def fit(model: nn.Module, loss_fn: LossFn, train_ds: Dataset, val_ds: Dataset | None, hierarchy: Hierarchy,
        cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = True, *,
        metrics_path: str | os.PathLike | None = None, curve_path: str | os.PathLike | None = None,
        meta: Mapping[str, Any] | None = None, resume_dir: str | os.PathLike | None = None,
        on_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """Train ``model`` for ``cfg.iterations`` steps with ``cfg.seed``; evaluate; write outputs.

    Args:
        model: returns a list of L logit tensors coarse→fine (B×N_l×h×w), or one (finest) for a flat head.
        loss_fn: ``loss_fn(logits_list, mask)`` with mask B×L×H×W int64 (255 = ignore) → scalar.
        train_ds, val_ds: datasets of dict samples {"image": C×H×W, "mask": L×H×W, "meta": ...};
            ``val_ds=None`` skips evaluation.
        cfg: the run's settings. ``cfg.seed`` is used (``cfg.seeds`` is for the caller's loop).
        out_dir: receives ``ckpt.pt`` and, unless redirected, ``metrics.json`` and ``curve.csv``.
        resume: continue from ``out_dir/ckpt.pt``, else ``resume_dir/ckpt.pt``, if it exists (bit-for-bit on
            CPU). A finished checkpoint is not retrained: its stored metrics are rewritten and returned.
        meta: extra checkpoint keys (what makes the model self-contained: tree, bands, normalisation, model
            spec; :func:`hierars.training.checkpoint.model_metadata`), stored in every checkpoint.
        resume_dir: where periodic checkpoints go (default ``out_dir``); at the end it keeps a hard link to the
            final checkpoint (no extra space), so a failure after ``fit`` does not lose the training.
        on_step: called with a number of finished iterations: once with the resumed start (or all iterations for a
            finished checkpoint), then with 1 after every step (:mod:`hierars.training.parallel`'s progress).

    Raises:
        TrainingInterrupted: SIGINT / SIGTERM arrived; a checkpoint was written first.
        FloatingPointError: NaN / inf in an input batch or in the loss (names the iteration and the files).
        ValueError: the checkpoint to resume is unreadable, or from other settings, another tree or model.

    Returns:
        Flat metrics: ``mIoU_L1``.. (argmax), ``mIoU_L1_jsps``.. (if ``cfg.jsps``), ``iteration``,
        ``train_seconds``, ``seconds_per_iter``, ``final_loss``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "ckpt.pt"
    work_path = Path(resume_dir) / "ckpt.pt" if resume_dir is not None else ckpt_path  # periodic checkpoints
    metrics_path = Path(metrics_path) if metrics_path else out_dir / "metrics.json"
    curve_path = Path(curve_path) if curve_path else out_dir / "curve.csv"
    if len(train_ds) == 0:  # type: ignore[arg-type]
        raise ValueError("the training dataset is empty")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    retain_freed_memory()  # glibc: reuse freed activations instead of page-faulting them in every step
    info, device = distributed.setup(resolve_device(cfg.device))  # torchrun: join the job (no-op otherwise)
    use_amp = cfg.amp and device.type == "cuda"
    if cfg.amp and not use_amp:
        log.info("amp requested but device is %s: training in fp32", device)

    seed_everything(cfg.seed)
    model.to(device)
    net = distributed.wrap_model(model, device, info)  # DDP with several processes; `model` is what is saved
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state: dict[str, Any] = {"start": 0, "history": [], "acc": {"sum": 0.0, "n": 0}, "seconds": 0.0}
    saved = None
    from_path = next((p for p in (ckpt_path, work_path) if resume and p.exists()), None)
    if from_path is not None:
        saved = load_checkpoint(from_path, map_location=device)
        check_resume_config(saved["config"], cfg, from_path)
        check_checkpoint_tree(saved, hierarchy, from_path)
        if int(saved.get("world_size", 1)) != info.world_size:
            raise ValueError(f"cannot resume from {from_path}: it was trained by {saved.get('world_size', 1)} "
                             f"process(es), this job has {info.world_size} (the global batch would change)")
        for obj, key in ((model, "model"), (optimizer, "optimizer"), (scheduler, "scheduler")):
            load_state_checked(obj, saved[key], from_path, key)
        scaler.load_state_dict(saved.get("scaler", {}) or scaler.state_dict())
        state = {"start": int(saved["iteration"]), "history": list(saved["history"]),
                 "acc": dict(saved["loss_acc"]), "seconds": float(saved.get("train_seconds", 0.0))}
        log.info("resuming %s at iteration %d/%d", from_path, state["start"], cfg.iterations)
        if state["start"] >= cfg.iterations and saved.get("metrics"):
            if on_step is not None:
                on_step(cfg.iterations)
            if info.is_main:
                if from_path != ckpt_path:
                    save_checkpoint(ckpt_path, saved)
                atomic_write_json(metrics_path, dict(saved["metrics"]))
                atomic_write_csv(curve_path, state["history"])
            distributed.barrier()
            return dict(saved["metrics"])

    if on_step is not None and state["start"]:
        on_step(state["start"])
    augment, loader = _augmenter(cfg, hierarchy), _batches(train_ds, cfg, state["start"], info)
    if saved is not None:
        set_rng_state(saved["rng"])  # after building the loader: nothing below draws from it but training
    eval_every = cfg.eval_interval or cfg.iterations
    ckpt_every = cfg.ckpt_interval or eval_every
    history, acc, timing = state["history"], state["acc"], {"eval": 0.0, "t0": time.perf_counter()}
    metrics: dict[str, float] = {}

    def run_eval() -> dict[str, float]:
        te = time.perf_counter()
        res = evaluate_modes(model, val_ds, hierarchy, _eval_modes(cfg), batch_size=cfg.eval_batch_size or cfg.batch_size,
                             num_workers=cfg.num_workers, device=device, progress=cfg.progress and info.is_main,
                             max_samples=cfg.max_val_samples, distributed=info.enabled)
        timing["eval"] += time.perf_counter() - te
        return flatten_modes(res)

    def checkpoint(step: int, final: dict[str, float] | None = None) -> None:
        if not info.is_main:  # rank 0 writes; the others wait at the barrier below
            distributed.barrier()
            return
        save_checkpoint(ckpt_path if final is not None else work_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {}, "iteration": step, "config": cfg.model_dump(),
            "world_size": info.world_size,
            "hierarchy": {"name": hierarchy.name, "num_classes": list(hierarchy.num_classes)}, **(meta or {}),
            "rng": rng_state(), "sampler": {"seed": cfg.seed, "next_iteration": step},
            "history": history, "loss_acc": dict(acc),
            "train_seconds": state["seconds"] + (time.perf_counter() - timing["t0"]), "metrics": final or {},
        })
        atomic_write_csv(curve_path, history)
        distributed.barrier()

    model.train()
    pbar = tqdm(total=cfg.iterations, initial=state["start"], desc=f"train seed {cfg.seed}",
                disable=not (cfg.progress and info.is_main), mininterval=2.0, dynamic_ncols=True)
    step, last_loss = state["start"], float("nan")
    with StopOnSignal() as stop:
        for batch in loader:
            image, mask = batch["image"], batch["mask"]
            check_finite_batch(image, batch.get("meta"), step, cfg.seed)
            if augment is not None:
                image, mask = augment_batch(augment, image, mask, cfg.seed, step, info.rank, info.world_size)
            if info.enabled:
                distributed.seed_step(cfg.seed, step, info.rank)
            lr = optimizer.param_groups[0]["lr"]
            try:
                last_loss = _train_step(net, loss_fn, optimizer, scheduler, scaler,
                                        image.to(device, non_blocking=True), mask.to(device, non_blocking=True), cfg,
                                        use_amp, step)
            except FloatingPointError as err:
                raise FloatingPointError(f"{err}; the batch's files: {batch_files(batch.get('meta'))}") from None
            step += 1
            acc["sum"] += last_loss
            acc["n"] += 1
            pbar.update(1)
            if on_step is not None:
                on_step(1)
            row: dict[str, Any] | None = None
            if step % cfg.log_interval == 0 or step == cfg.iterations:
                row = {"iteration": step, "loss": acc["sum"] / max(1, acc["n"]), "lr": lr}
                acc["sum"], acc["n"] = 0.0, 0
                pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
            if val_ds is not None and (step % eval_every == 0 or step == cfg.iterations):
                metrics = run_eval()
                row = row or {"iteration": step, "loss": float("nan"), "lr": lr}
                row.update({f"val_{k}": v for k, v in metrics.items() if k.startswith(("mIoU", "consistency"))})
                log.info("iteration %d: %s", step, {k: round(v, 4) for k, v in metrics.items() if k.startswith("mIoU")})
            if row is not None:
                history.append(row)
            if _stop_everywhere(stop.received, info, device) and step < cfg.iterations:
                checkpoint(step)
                pbar.close()
                message = (f"training (seed {cfg.seed}) stopped by {stop.received or 'a signal to another rank'} "
                           f"at iteration {step}/"
                           f"{cfg.iterations}; checkpoint written to {work_path}. Run the same command again (dvc "
                           "repro, or fit(..., resume=True) with the same settings) to resume from it.")
                announce(message)
                raise TrainingInterrupted(message)
            if step % ckpt_every == 0 and step < cfg.iterations:
                checkpoint(step)
    pbar.close()
    if step != cfg.iterations:
        raise RuntimeError(f"training stopped at iteration {step} of {cfg.iterations}")
    elapsed = time.perf_counter() - timing["t0"]
    final = {"iteration": float(step), "seed": float(cfg.seed), "final_loss": last_loss,
             "train_seconds": state["seconds"] + elapsed, "eval_seconds": timing["eval"],
             "seconds_per_iter": (elapsed - timing["eval"]) / max(1, cfg.iterations - state["start"]), **metrics}
    checkpoint(step, final)
    if info.is_main:
        if work_path != ckpt_path:
            link_or_remove(ckpt_path, work_path)
        atomic_write_json(metrics_path, final)
    distributed.barrier()
    return final


def _stop_everywhere(received: str | None, info: DistInfo, device: torch.device) -> bool:
    """Whether to stop after this step: a signal reached this process, or (under torchrun) any rank."""
    if not info.enabled:
        return received is not None
    flag = torch.tensor(float(received is not None), device=device)
    return bool(distributed.mean_over_ranks(flag).item() > 0)  # every rank stops at the same step


def _train_step(model: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, image: torch.Tensor,
                mask: torch.Tensor, cfg: TrainConfig, use_amp: bool, step: int) -> float:
    """One optimiser step on a batch (image B×C×H×W, mask B×L×H×W); returns the loss as a float.

    Under DDP the returned (and checked) loss is the mean over ranks, so every rank stops together on a NaN.
    """
    with torch.autocast(image.device.type, enabled=use_amp):
        loss = loss_fn(as_level_list(model(image)), mask)
    value = distributed.mean_over_ranks(loss)
    if not torch.isfinite(value):
        raise FloatingPointError(f"non-finite training loss {value.item()} at iteration {step} (seed {cfg.seed})")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return float(value)
