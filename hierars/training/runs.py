"""Runs: one named configuration trained for every seed, aggregated; reading runs back for reports and figures.

Layout written by :func:`train_run`::

    models_dir/<run>/seed<k>/{ckpt.pt, metrics.json, curve.csv}
    reports_dir/metrics/<run>.json       mean and half-range over seeds (flat scalars)
    reports_dir/plots/<run>_curve.csv    every seed's curve, with a ``seed`` column
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from hierars.atomic import atomic_write_csv, atomic_write_json
from hierars.hierarchy import Hierarchy
from hierars.models import build_model
from hierars.training import distributed
from hierars.training.checkpoint import load_checkpoint, run_metadata
from hierars.training.config import TrainConfig, resolve_run, run_names
from hierars.training.guards import check_checkpoint_tree, load_state_checked
from hierars.training.loop import fit
from hierars.training.model_card import write_model_card
from hierars.training.optim import build_loss
from hierars.training.parallel import can_fork, run_seed_tasks
from hierars.training.resume import RESUME_FOLDER, prune_stale_resume, resume_dir, resume_key
from hierars.training.seeding import seed_everything
from hierars.validation import validate

__all__ = ["aggregate_seeds", "build_run_model", "train_run", "collect_run_metrics", "load_run_model"]

log = logging.getLogger(__name__)


def aggregate_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean and half-range (``(max - min) / 2``) of every numeric key over seeds.

    Returns ``{k: mean, k + "_hr": half-range, "n_seeds": n}``; keys "seed"/"iteration" are dropped.
    NaN values (e.g. a class absent from val) propagate.
    """
    if not per_seed:
        raise ValueError("aggregate_seeds needs at least one result")
    keys = [k for k in per_seed[0] if k not in ("seed",)]
    out: dict[str, float] = {}
    for k in keys:
        vals = [float(r[k]) for r in per_seed if k in r]
        if len(vals) != len(per_seed):
            raise ValueError(f"metric {k!r} missing from some seeds")
        out[k] = float(np.mean(vals))
        out[f"{k}_hr"] = float((max(vals) - min(vals)) / 2) if all(map(math.isfinite, vals)) else float("nan")
    out["n_seeds"] = float(len(per_seed))
    return out


def build_run_model(cfg: TrainConfig, hierarchy: Hierarchy, in_channels: int) -> nn.Module:
    """``hierars.models.build_model`` with the run's architecture, encoder, head, fusion and decoder width."""
    return build_model(cfg.arch, cfg.encoder, in_channels, hierarchy, head=cfg.head, fusion=cfg.fusion,
                       decoder_channels=cfg.decoder_channels, pretrained=cfg.pretrained, dropout=cfg.dropout,
                       upsample_logits=cfg.upsample_logits)


def train_run(run: str, cfg: TrainConfig, hierarchy: Hierarchy, train_ds: Dataset, val_ds: Dataset | None, *,
              models_dir: str | os.PathLike, reports_dir: str | os.PathLike, resume: bool = True,
              build: Callable[[TrainConfig, int], tuple[nn.Module, nn.Module]] | None = None,
              report_name: str | None = None, resume_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train one named run for every seed of ``cfg.seed_list`` and aggregate (mean ± half-range).

    The model is built after seeding with each seed, so initialisation differs between seeds. With
    ``cfg.seed_workers > 1`` the seeds train at the same time in forked processes sharing ``cfg.num_threads``
    (:mod:`hierars.training.parallel`); each seed's result is the same as in the sequential loop. ``build(seed_cfg,
    in_channels) -> (model, loss_fn)`` replaces the default (:func:`build_run_model` + :func:`build_loss`), e.g.
    for the transfer variants; ``report_name`` (default ``run``) names the files under ``reports_dir``.

    Periodic checkpoints go to ``resume_root/<run>/<key>/seed<k>/`` (default ``models_dir/.resume``), outside the
    DVC output ``models_dir/<run>``, so a re-run ``dvc repro`` resumes them; ``key`` hashes the settings, tree,
    data and code (:mod:`hierars.training.resume`), so a changed run never resumes a stale checkpoint.

    Writes:
        ``models_dir/<run>/seed<k>/{ckpt.pt, metrics.json, curve.csv}`` (each checkpoint self-contained:
        :func:`hierars.training.checkpoint.run_metadata`, read by :func:`hierars.load_model`);
        ``models_dir/<run>/MODEL_CARD.md`` — data, tree, settings, per-seed metrics
        (:mod:`hierars.training.model_card`);
        ``reports_dir/metrics/<report_name>.json`` — :func:`aggregate_seeds` of the per-seed metrics (flat scalars);
        ``reports_dir/plots/<report_name>_curve.csv`` — every seed's curve, with a ``seed`` column.

    Returns:
        {"run", "config", "per_seed": [metrics...], "aggregate": {...}, "ckpts": [paths]}
    """
    if not run or any(c in run for c in "/\\ "):
        raise ValueError(f"run name must be a plain non-empty name, got {run!r}")
    in_channels = int(train_ds[0]["image"].shape[0])
    models_dir, reports_dir = Path(models_dir), Path(reports_dir)
    curves, ckpts = [], []
    meta = run_metadata(cfg, hierarchy, in_channels, train_ds, val_ds, rebuildable=build is None)
    root = Path(resume_root) if resume_root is not None else models_dir / RESUME_FOLDER
    key = resume_key(cfg, hierarchy, train_ds, val_ds)
    if resume and distributed.is_main():
        prune_stale_resume(root, run, key)
    workers = min(cfg.seed_workers, len(cfg.seed_list))
    if workers > 1 and (distributed.current().enabled or not can_fork()):
        log.info("seed_workers=%d: seeds run one after another here (%s)", workers,
                 "under torchrun" if distributed.current().enabled else "no fork on this platform")
        workers = 1
    threads = max(1, (cfg.num_threads or torch.get_num_threads()) // workers) if workers > 1 else cfg.num_threads

    def seed_task(seed: int) -> Callable[[Callable[[int], None] | None], dict[str, float]]:
        seed_cfg = cfg.model_copy(update={"seed": seed, "seeds": None, "num_threads": threads,
                                          "progress": cfg.progress and workers == 1})

        def task(on_step: Callable[[int], None] | None = None) -> dict[str, float]:
            seed_everything(seed)  # before building: initialisation differs between seeds
            if build is None:
                model, loss_fn = build_run_model(seed_cfg, hierarchy, in_channels), build_loss(seed_cfg, hierarchy)
            else:
                model, loss_fn = build(seed_cfg, in_channels)
            return fit(model, loss_fn, train_ds, val_ds, hierarchy, seed_cfg, models_dir / run / f"seed{seed}",
                       resume, resume_dir=resume_dir(root, run, key, seed), meta=meta, on_step=on_step)

        return task

    tasks = [seed_task(seed) for seed in cfg.seed_list]
    if workers > 1:
        per_seed = run_seed_tasks(tasks, [f"seed {s}" for s in cfg.seed_list], workers, threads,
                                  cfg.iterations * len(tasks), desc=f"train {run}", progress=cfg.progress)
    else:
        per_seed = [task() for task in tasks]
    for seed in cfg.seed_list:
        out = models_dir / run / f"seed{seed}"
        ckpts.append(out / "ckpt.pt")
        with (out / "curve.csv").open(newline="") as fh:
            curves += [{"seed": seed, **row} for row in csv.DictReader(fh)]
    agg = aggregate_seeds(per_seed)
    if distributed.is_main():  # under torchrun, rank 0 writes the reports (fit has synchronised the ranks)
        write_model_card(models_dir / run / "MODEL_CARD.md", run, cfg, hierarchy, meta, per_seed, agg,
                         cfg.seed_list)
        atomic_write_json(reports_dir / "metrics" / f"{report_name or run}.json", agg)
        atomic_write_csv(reports_dir / "plots" / f"{report_name or run}_curve.csv", curves)
    distributed.barrier()
    return {"run": run, "config": cfg.model_dump(), "per_seed": per_seed, "aggregate": agg, "ckpts": ckpts}


def collect_run_metrics(train_section: Mapping[str, Any], reports_dir: str | os.PathLike,
                        runs: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The configured runs that have a ``reports_dir/metrics/<run>.json``, with their resolved settings.

    Returns:
        {run: {"config": TrainConfig, "metrics": {...aggregate...}}} in ``train.runs`` order;
        runs without a metrics file are skipped (logged).
    """
    metrics_dir = Path(reports_dir) / "metrics"
    out: dict[str, dict[str, Any]] = {}
    for run in runs if runs is not None else run_names(train_section):
        path = metrics_dir / f"{run}.json"
        if not path.is_file():
            log.warning("no metrics for run %r (%s missing): skipped", run, path)
            continue
        out[run] = {"config": resolve_run(train_section, run), "metrics": json.loads(path.read_text())}
    return out


def load_run_model(ckpt_path: str | os.PathLike, hierarchy: Hierarchy, in_channels: int,
                   device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a :func:`fit` checkpoint from its stored settings and load its weights (eval mode)."""
    state = load_checkpoint(ckpt_path, map_location=device)
    cfg = validate(TrainConfig, state["config"], "config", source=str(ckpt_path))
    check_checkpoint_tree(state, hierarchy, ckpt_path)
    model = build_run_model(cfg.model_copy(update={"pretrained": None}), hierarchy, in_channels)
    load_state_checked(model, state["model"], ckpt_path, "model")
    return model.to(device).eval()
