"""Training engine: seeded, iteration-based ``fit`` with atomic checkpoints and bit-exact resume; ``evaluate``.

One run = one model, one loss, one seed, ``cfg.iterations`` optimiser steps::

    cfg = resolve_run(params["train"], "bhccm_hsc")          # TrainConfig (pydantic, extra="forbid")
    model = build_model(cfg.arch, cfg.encoder, in_channels, h, head=cfg.head, fusion=cfg.fusion)
    metrics = fit(model, build_loss(cfg, h), train_ds, val_ds, h, cfg, out_dir="models/bhccm_hsc/seed0")

Determinism. The batch drawn at iteration ``i`` is a pure function of ``(seed, i)``
(:class:`IterationBatchSampler` concatenates seeded per-epoch permutations), random dataset
transforms run under a per-sample seed derived from ``(seed, i, index)``, and the engine's own
flip/rot90 augmentation draws from a generator seeded by ``(seed, i)``. Everything else that is
random (dropout) uses the global torch RNG, whose state is checkpointed together with numpy's and
Python's. On CPU, ``N`` straight iterations and ``N/2 + resume + N/2`` give identical weights
(``torch.equal``), whatever ``num_workers`` is.

Outputs of :func:`fit` in ``out_dir``: ``ckpt.pt`` (written atomically: temp file, fsync,
``os.replace``), ``metrics.json`` (flat scalars per level; keys without suffix are per-level argmax,
keys ending in ``_jsps`` use JSPS) and ``curve.csv`` (iteration, loss, lr, val_mIoU_L1 ...).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from hierars.hierarchy import Hierarchy
from hierars.losses import upsample_logits

__all__ = [
    "TrainConfig",
    "TrainSection",
    "resolve_run",
    "run_names",
    "seed_everything",
    "IterationBatchSampler",
    "pad_collate",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "PolyLR",
    "fit",
    "evaluate",
    "evaluate_modes",
    "save_checkpoint",
    "load_checkpoint",
    "aggregate_seeds",
    "build_run_model",
    "train_run",
    "build_run_datasets",
    "collect_run_metrics",
    "load_run_model",
    "predict_samples",
    "atomic_write_text",
]

log = logging.getLogger(__name__)

#: Config fields that may change between a checkpoint and a resumed run without changing the result.
_RESUME_FREE_FIELDS = frozenset(
    {"eval_interval", "ckpt_interval", "log_interval", "num_workers", "num_threads", "eval_batch_size",
     "jsps", "seeds", "max_val_samples", "progress"}
)


# ----------------------------------------------------------------------------------------- config
class TrainConfig(BaseModel):
    """One training run (the ``train`` section of params.yaml, merged with one entry of ``train.runs``).

    Defaults are the fast CPU profile (convnext_atto + 64-channel FPN, 10-band 128² tiles, batch 8).
    """

    model_config = ConfigDict(extra="forbid")

    # model (see hierars.models.build_model)
    arch: str = "fpn"
    encoder: str = "tu-convnext_atto"
    head: Literal["flat", "independent", "bhccm", "hssn"] = "bhccm"
    fusion: Literal["none", "coarse_to_fine", "fine_to_coarse", "bidirectional"] = "bidirectional"
    decoder_channels: int | None = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="head dropout")
    upsample_logits: bool = Field(True, description="upsample logits in the model (smp) vs in the loss")
    pretrained: str | None = Field(None, description="local encoder weights file (never downloaded)")
    # loss
    loss: Literal["ce", "hsc", "hssn"] = "hsc"
    mu: float = Field(1.0, ge=0.0, description="weight of the path-KL term of the HSC loss")
    # optimisation
    iterations: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(6e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only")
    poly_power: float = Field(1.0, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)
    warmup_iters: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0.0)
    augment: bool = Field(True, description="random flips and 90° rotations (hierars.data.SegAugment)")
    aug_scale: tuple[float, float] | None = Field(None, description="SegAugment random resized crop area range")
    band_jitter: float = Field(0.0, ge=0.0, description="SegAugment per-band gain/offset noise (std)")
    amp: bool = Field(False, description="mixed precision; only used on CUDA, always off on CPU")
    # evaluation / logging / checkpoints
    eval_interval: int = Field(0, ge=0, description="0 = evaluate only after the last iteration")
    ckpt_interval: int | None = Field(None, ge=1, description="default: eval_interval, else iterations")
    log_interval: int = Field(10, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    jsps: bool = Field(True, description="also evaluate with JSPS (keys *_jsps)")
    max_val_samples: int | None = Field(None, ge=1, description="evaluate on the first N val samples only")
    progress: bool = True
    # data / runtime
    data_dir: str | None = Field(None, description="prepared data folder or raw dataset root; "
                                 "None = <paths.data>/processed")
    source: str = Field("s2", description="dataset name passed to hierars.data.build_dataset")
    hierarchy: str | None = Field(None, description="tree name/YAML; None = the dataset's default tree")
    max_train_samples: int | None = Field(None, ge=1)
    seed: int = 0
    seeds: list[int] | None = Field(None, description="train one model per seed (overrides `seed`)")
    num_workers: int = Field(0, ge=0)
    num_threads: int | None = Field(None, ge=1, description="torch.set_num_threads; None keeps the default")
    device: str = "cpu"

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if (self.loss == "hssn") != (self.head == "hssn"):
            raise ValueError(f"loss 'hssn' needs head 'hssn' and vice versa; got head={self.head!r} loss={self.loss!r}")
        if self.head == "flat" and self.loss != "ce":
            raise ValueError(f"a flat head predicts the finest level only; use loss 'ce', not {self.loss!r}")
        if self.warmup_iters >= self.iterations:
            raise ValueError(f"warmup_iters ({self.warmup_iters}) must be < iterations ({self.iterations})")
        if self.seeds is not None and not self.seeds:
            raise ValueError("seeds must be a non-empty list (or omitted)")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.seed]


class TrainSection(TrainConfig):
    """The whole ``train`` section: shared settings plus named ``runs`` that override them."""

    runs: dict[str, dict[str, Any]] = Field(default_factory=dict)


def run_names(train_section: Mapping[str, Any]) -> list[str]:
    """Names of the configured runs (``train.runs`` keys), in file order."""
    return list(TrainSection.model_validate(dict(train_section)).runs)


def resolve_run(train_section: Mapping[str, Any], run: str | None = None) -> TrainConfig:
    """Merge ``train.runs[run]`` over the shared ``train`` settings and validate the result.

    Raises:
        ValueError: ``run`` is not in ``train.runs`` or the merged settings are invalid.
    """
    section = TrainSection.model_validate(dict(train_section))
    base = section.model_dump(exclude={"runs"}, exclude_unset=True)
    if run is not None:
        if run not in section.runs:
            raise ValueError(f"run {run!r} is not in params 'train.runs' (available: {sorted(section.runs)})")
        base.update(section.runs[run])
    try:
        return TrainConfig.model_validate(base)
    except ValidationError as err:
        raise ValueError(f"invalid settings for train run {run!r}:\n{err}") from err


# ----------------------------------------------------------------------------------- determinism
def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch (CPU and CUDA); optionally prefer deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global RNG is what we manage)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _mix(*ints: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy SeedSequence)."""
    state = np.random.SeedSequence([int(i) % 2**63 for i in ints]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % 2**63


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain Python objects (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np_state = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(np_state)  # noqa: NPY002
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------------------------------- data
class IterationBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(iteration, index)`` keys for iterations ``start .. num_iterations-1``.

    The sample stream is the concatenation of per-epoch permutations of ``range(num_samples)``,
    epoch ``e`` drawn from a generator seeded with ``(seed, e)``; batch ``i`` is the slice
    ``[i*B, (i+1)*B)`` of that stream. No state: resuming at ``start`` reproduces the same batches.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, num_iterations: int, start: int = 0,
                 shuffle: bool = True) -> None:
        if num_samples < 1:
            raise ValueError("the training dataset is empty")
        if not 0 <= start <= num_iterations:
            raise ValueError(f"start iteration {start} outside [0, {num_iterations}]")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_iterations, self.start, self.shuffle = num_iterations, start, shuffle
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            if self.shuffle:
                gen = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5A4D))
                self._perm = torch.randperm(self.num_samples, generator=gen)
            else:
                self._perm = torch.arange(self.num_samples)
            self._epoch = epoch
        return self._perm

    def batch_indices(self, iteration: int) -> list[int]:
        """Dataset indices of the batch drawn at ``iteration``."""
        n, out = self.num_samples, []
        for pos in range(iteration * self.batch_size, (iteration + 1) * self.batch_size):
            out.append(int(self._permutation(pos // n)[pos % n]))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.num_iterations):
            yield [(it, idx) for idx in self.batch_indices(it)]

    def __len__(self) -> int:
        return self.num_iterations - self.start


class _SeededSamples(Dataset):
    """Wraps a dataset so that ``ds[(iteration, index)]`` runs its random transforms under a seed that
    depends only on ``(seed, iteration, index)``; the global RNG states are restored afterwards."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        iteration, index = key
        s = _mix(self.seed, iteration, index)
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s % 2**32)  # noqa: NPY002
            random.seed(s)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)  # noqa: NPY002
                random.setstate(py_state)


def pad_collate(samples: Sequence[Mapping[str, Any]], multiple: int = 32, ignore_index: int = 255
                ) -> dict[str, Any]:
    """Stack dict samples, padding right/bottom to a common size that is a multiple of ``multiple``.

    Images pad with 0, masks with ``ignore_index`` (so padding never counts in loss or metrics).
    ``meta`` becomes a list of the samples' meta dicts (they may hold CRS/transform objects).

    Returns:
        {"image": B×C×H'×W' float, "mask": B×L×H'×W' int64, "meta": list[dict]}
    """
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    for key in ("image", "mask"):
        if key not in samples[0]:
            raise ValueError(f"samples must be dicts with 'image' and 'mask'; missing {key!r}")
    h = max(int(s["image"].shape[-2]) for s in samples)
    w = max(int(s["image"].shape[-1]) for s in samples)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    images, masks = [], []
    for s in samples:
        img, msk = torch.as_tensor(s["image"]), torch.as_tensor(s["mask"])
        if img.shape[-2:] != msk.shape[-2:]:
            raise ValueError(f"image {tuple(img.shape)} and mask {tuple(msk.shape)} differ in size")
        ph, pw = h - img.shape[-2], w - img.shape[-1]
        images.append(F.pad(img, (0, pw, 0, ph), value=0.0) if ph or pw else img)
        masks.append(F.pad(msk, (0, pw, 0, ph), value=ignore_index) if ph or pw else msk)
    return {"image": torch.stack(images), "mask": torch.stack(masks).long(),
            "meta": [s.get("meta", {}) for s in samples]}


def _augment_batch(augment: nn.Module, image: torch.Tensor, mask: torch.Tensor, seed: int, iteration: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a batch augmentation under a CPU RNG seeded with ``(seed, iteration)`` (global state untouched).

    image B×C×H×W float, mask B×L×H×W int64 → same shapes. Runs on CPU tensors, before the device copy.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_mix(seed, iteration, 0xA06))
        return augment(image, mask)


def _subset(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    return torch.utils.data.Subset(ds, list(range(n)))


# ------------------------------------------------------------------------------- model components
def build_loss(cfg: TrainConfig, hierarchy: Hierarchy) -> nn.Module:
    """Loss module for ``cfg.loss``: "ce" → HierarchicalCELoss, "hsc" → HSCLoss(mu), "hssn" → HSSNLoss."""
    from hierars import losses

    if cfg.loss == "ce":
        return losses.HierarchicalCELoss()
    if cfg.loss == "hsc":
        return losses.HSCLoss(hierarchy, mu=cfg.mu)
    return losses.HSSNLoss(hierarchy)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum) over trainable parameters; no weight decay on biases, norms and scalars."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


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


def _as_level_list(logits: Any) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        return [logits]
    if isinstance(logits, (list, tuple)) and logits and all(isinstance(z, torch.Tensor) for z in logits):
        return list(logits)
    raise TypeError(f"model output must be a tensor or a list of B×N_l×h×w tensors, got {type(logits).__name__}")


# --------------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate_modes(model: nn.Module, dataset: Dataset, hierarchy: Hierarchy,
                   modes: Sequence[str] = ("argmax", "jsps"), *, batch_size: int = 8, num_workers: int = 0,
                   device: str | torch.device | None = None, progress: bool = True,
                   max_samples: int | None = None) -> dict[str, dict[str, float]]:
    """Evaluate once per batch for several inference modes (one forward pass each batch).

    Logits are upsampled bilinearly to the mask size; ``hierars.inference.predict_levels`` turns
    them into B×L×H×W predictions (a flat model's finest prediction is lifted through the tree);
    ``hierars.metrics.HierarchicalMetrics`` accumulates per-level confusion matrices.

    Returns:
        {mode: HierarchicalMetrics.to_flat_dict()} (e.g. keys mIoU_L1.., OA_L3, consistency).
    """
    from hierars.inference import predict_levels
    from hierars.metrics import HierarchicalMetrics

    if not modes:
        raise ValueError("evaluate needs at least one mode")
    for m in modes:
        if m not in ("argmax", "jsps", "hssn"):
            raise ValueError(f"unknown inference mode {m!r}; expected 'argmax', 'jsps' or 'hssn'")
    dataset = _subset(dataset, max_samples)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the evaluation dataset is empty")
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
            logits = upsample_logits(_as_level_list(model(image)), tuple(mask.shape[-2:]))
            for m in modes:
                meters[m].update(predict_levels(logits, hierarchy, mode=m).cpu(), mask)
    finally:
        model.train(was_training)
    return {m: {k: float(v) for k, v in meters[m].to_flat_dict().items()} for m in modes}


def evaluate(model: nn.Module, dataset: Dataset, hierarchy: Hierarchy, mode: str = "argmax",
             **kwargs: Any) -> dict[str, float]:
    """Per-level metrics of ``model`` on ``dataset`` with one inference mode ("argmax" or "jsps").

    Keyword arguments go to :func:`evaluate_modes` (batch_size, num_workers, device, progress, max_samples).
    """
    return evaluate_modes(model, dataset, hierarchy, (mode,), **kwargs)[mode]


def _flatten_modes(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{"argmax": {k: v}, "jsps": {k: v}} → {k: v, k_jsps: v}."""
    out: dict[str, float] = {}
    for mode, vals in results.items():
        suffix = "" if mode == "argmax" else f"_{mode}"
        out.update({f"{k}{suffix}": v for k, v in vals.items()})
    return out


# ----------------------------------------------------------------------------------------- files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def _write_curve(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields or ["iteration"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` into memory, then an atomic write: a crash never leaves a half-written file."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: tensors and plain Python only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    missing = {"model", "iteration", "config"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a hierars checkpoint (missing keys {sorted(missing)})")
    return state


# -------------------------------------------------------------------------------------------- fit
def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def _check_resume_config(saved: Mapping[str, Any], cfg: TrainConfig, path: Path) -> None:
    now = cfg.model_dump()
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in _RESUME_FREE_FIELDS and saved.get(k) != now.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume from {path}: the training settings changed ({detail}); "
                         "delete the checkpoint or call fit(..., resume=False)")


def fit(model: nn.Module, loss_fn: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor],
        train_ds: Dataset, val_ds: Dataset | None, hierarchy: Hierarchy, cfg: TrainConfig,
        out_dir: str | os.PathLike, resume: bool = True, *, metrics_path: str | os.PathLike | None = None,
        curve_path: str | os.PathLike | None = None) -> dict[str, float]:
    """Train ``model`` for ``cfg.iterations`` steps with ``cfg.seed``; evaluate; write outputs.

    Args:
        model: returns a list of L logit tensors coarse→fine (B×N_l×h×w), or one (finest) for a flat head.
        loss_fn: ``loss_fn(logits_list, mask)`` with mask B×L×H×W int64 (255 = ignore) → scalar.
        train_ds, val_ds: datasets of dict samples {"image": C×H×W, "mask": L×H×W, "meta": ...};
            ``val_ds=None`` skips evaluation.
        cfg: the run's settings. ``cfg.seed`` is used (``cfg.seeds`` is for the caller's loop).
        out_dir: receives ``ckpt.pt`` and, unless redirected, ``metrics.json`` and ``curve.csv``.
        resume: continue from ``out_dir/ckpt.pt`` if it exists (bit-for-bit on CPU). A finished
            checkpoint is not retrained: its stored metrics are rewritten and returned.

    Returns:
        Flat metrics: ``mIoU_L1``.. (argmax), ``mIoU_L1_jsps``.. (if ``cfg.jsps``), ``iteration``,
        ``train_seconds``, ``seconds_per_iter``, ``final_loss``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "ckpt.pt"
    metrics_path = Path(metrics_path) if metrics_path else out_dir / "metrics.json"
    curve_path = Path(curve_path) if curve_path else out_dir / "curve.csv"
    if len(train_ds) == 0:  # type: ignore[arg-type]
        raise ValueError("the training dataset is empty")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = _resolve_device(cfg.device)
    use_amp = cfg.amp and device.type == "cuda"
    if cfg.amp and not use_amp:
        log.info("amp requested but device is %s: training in fp32", device)

    seed_everything(cfg.seed)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, history, acc, saved, prev_seconds = 0, [], {"sum": 0.0, "n": 0}, None, 0.0
    if resume and ckpt_path.exists():
        saved = load_checkpoint(ckpt_path, map_location=device)
        _check_resume_config(saved["config"], cfg, ckpt_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved.get("scaler", {}) or scaler.state_dict())
        start, history = int(saved["iteration"]), list(saved["history"])
        acc, prev_seconds = dict(saved["loss_acc"]), float(saved.get("train_seconds", 0.0))
        log.info("resuming %s at iteration %d/%d", ckpt_path, start, cfg.iterations)
        if start >= cfg.iterations and saved.get("metrics"):
            metrics = dict(saved["metrics"])
            _write_json(metrics_path, metrics)
            _write_curve(curve_path, history)
            return metrics

    train_ds = _subset(train_ds, cfg.max_train_samples)
    sampler = IterationBatchSampler(len(train_ds), cfg.batch_size, cfg.seed, cfg.iterations, start)  # type: ignore[arg-type]
    augment = None
    if cfg.augment:
        from hierars.data.transforms import SegAugment

        augment = SegAugment(scale=cfg.aug_scale, band_jitter=cfg.band_jitter, ignore_index=hierarchy.ignore_index)
    loader = DataLoader(_SeededSamples(train_ds, cfg.seed), batch_sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=pad_collate, generator=torch.Generator().manual_seed(cfg.seed),
                        persistent_workers=False)
    if saved is not None:
        _set_rng_state(saved["rng"])  # after building the loader: nothing below draws from it but training

    eval_every = cfg.eval_interval or cfg.iterations
    ckpt_every = cfg.ckpt_interval or eval_every
    eval_modes = ("argmax", "jsps") if cfg.jsps else ("argmax",)
    if cfg.head == "hssn":
        eval_modes += ("hssn",)  # HSSN's own joint-softmax inference rule
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    metrics: dict[str, float] = {}

    eval_seconds = 0.0

    def run_eval() -> dict[str, float]:
        nonlocal eval_seconds
        te = time.perf_counter()
        res = evaluate_modes(model, val_ds, hierarchy, eval_modes, batch_size=eval_bs, num_workers=cfg.num_workers,
                             device=device, progress=cfg.progress, max_samples=cfg.max_val_samples)
        eval_seconds += time.perf_counter() - te
        return _flatten_modes(res)

    def checkpoint(step: int, final: dict[str, float] | None = None) -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_amp else {}, "iteration": step, "config": cfg.model_dump(),
            "hierarchy": {"name": hierarchy.name, "num_classes": list(hierarchy.num_classes)},
            "rng": _rng_state(), "sampler": {"seed": cfg.seed, "next_iteration": step},
            "history": history, "loss_acc": dict(acc), "train_seconds": prev_seconds + (time.perf_counter() - t0),
            "metrics": final or {},
        })
        _write_curve(curve_path, history)

    model.train()
    t0 = time.perf_counter()
    pbar = tqdm(total=cfg.iterations, initial=start, desc=f"train seed {cfg.seed}", disable=not cfg.progress,
                mininterval=2.0, dynamic_ncols=True)
    step, last_loss = start, float("nan")
    for batch in loader:
        image, mask = batch["image"], batch["mask"]
        if augment is not None:
            image, mask = _augment_batch(augment, image, mask, cfg.seed, step)
        image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=use_amp):
            logits = _as_level_list(model(image))
            loss = loss_fn(logits, mask)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at iteration {step} (seed {cfg.seed})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        last_loss = float(loss.detach())
        acc["sum"] += last_loss
        acc["n"] += 1
        pbar.update(1)
        row: dict[str, Any] | None = None
        if step % cfg.log_interval == 0 or step == cfg.iterations:
            row = {"iteration": step, "loss": acc["sum"] / max(1, acc["n"]), "lr": lr}
            acc = {"sum": 0.0, "n": 0}
            pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
        if val_ds is not None and (step % eval_every == 0 or step == cfg.iterations):
            metrics = run_eval()
            row = row or {"iteration": step, "loss": float("nan"), "lr": lr}
            row.update({f"val_{k}": v for k, v in metrics.items() if k.startswith(("mIoU", "consistency"))})
            log.info("iteration %d: %s", step, {k: round(v, 4) for k, v in metrics.items() if k.startswith("mIoU")})
        if row is not None:
            history.append(row)
        if step % ckpt_every == 0 and step < cfg.iterations:
            checkpoint(step)
    pbar.close()
    if step != cfg.iterations:
        raise RuntimeError(f"training stopped at iteration {step} of {cfg.iterations}")
    seconds = prev_seconds + (time.perf_counter() - t0)
    done = cfg.iterations - start
    final = {"iteration": float(step), "seed": float(cfg.seed), "final_loss": last_loss,
             "train_seconds": seconds, "eval_seconds": eval_seconds,
             "seconds_per_iter": (time.perf_counter() - t0 - eval_seconds) / max(1, done), **metrics}
    checkpoint(step, final)
    _write_json(metrics_path, final)
    return final


# ------------------------------------------------------------------------------------------ seeds
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


# ------------------------------------------------------------------------------------------- runs
def build_run_model(cfg: TrainConfig, hierarchy: Hierarchy, in_channels: int) -> nn.Module:
    """``hierars.models.build_model`` with the run's architecture, encoder, head, fusion and decoder width."""
    from hierars.models import build_model

    return build_model(cfg.arch, cfg.encoder, in_channels, hierarchy, head=cfg.head, fusion=cfg.fusion,
                       decoder_channels=cfg.decoder_channels, pretrained=cfg.pretrained, dropout=cfg.dropout,
                       upsample_logits=cfg.upsample_logits)


def build_run_datasets(params: Mapping[str, Any], cfg: TrainConfig) -> tuple[Dataset, Dataset, Hierarchy]:
    """Train and val datasets of the run's data source (``hierars.data.build_dataset``) and their tree.

    ``cfg.data_dir`` None means ``<paths.data>/processed`` (the prepare stage's output); a raw dataset
    root such as ``../shared/data/gid15`` is read in place.
    """
    from hierars.config import resolve_path, stage_paths
    from hierars.data import build_dataset, load_hierarchy

    data_dir = resolve_path(cfg.data_dir) if cfg.data_dir else stage_paths(params)["data"] / "processed"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder for train source {cfg.source!r} not found: {data_dir} "
                                "(run the prepare stage, or set train.data_dir)")
    tree = load_hierarchy(cfg.hierarchy) if cfg.hierarchy else None
    train_ds = build_dataset(data_dir, "train", tree, source=cfg.source)
    val_ds = build_dataset(data_dir, "val", tree, source=cfg.source)
    return train_ds, val_ds, train_ds.hierarchy


def train_run(run: str, cfg: TrainConfig, hierarchy: Hierarchy, train_ds: Dataset, val_ds: Dataset | None, *,
              models_dir: str | os.PathLike, reports_dir: str | os.PathLike, resume: bool = True
              ) -> dict[str, Any]:
    """Train one named run for every seed of ``cfg.seed_list`` and aggregate (mean ± half-range).

    The model is built after seeding with each seed, so initialisation differs between seeds.

    Writes:
        ``models_dir/<run>/seed<k>/{ckpt.pt, metrics.json, curve.csv}``;
        ``reports_dir/metrics/<run>.json`` — :func:`aggregate_seeds` of the per-seed metrics (flat scalars);
        ``reports_dir/plots/<run>_curve.csv`` — every seed's curve, with a ``seed`` column.

    Returns:
        {"run", "config", "per_seed": [metrics...], "aggregate": {...}, "ckpts": [paths]}
    """
    if not run or any(c in run for c in "/\\ "):
        raise ValueError(f"run name must be a plain non-empty name, got {run!r}")
    in_channels = int(train_ds[0]["image"].shape[0])
    models_dir, reports_dir = Path(models_dir), Path(reports_dir)
    per_seed, curves, ckpts = [], [], []
    for seed in cfg.seed_list:
        seed_cfg = cfg.model_copy(update={"seed": seed, "seeds": None})
        seed_everything(seed)
        model = build_run_model(seed_cfg, hierarchy, in_channels)
        out = models_dir / run / f"seed{seed}"
        metrics = fit(model, build_loss(seed_cfg, hierarchy), train_ds, val_ds, hierarchy, seed_cfg, out, resume)
        per_seed.append(metrics)
        ckpts.append(out / "ckpt.pt")
        with (out / "curve.csv").open(newline="") as fh:
            curves += [{"seed": seed, **row} for row in csv.DictReader(fh)]
    agg = aggregate_seeds(per_seed)
    _write_json(reports_dir / "metrics" / f"{run}.json", agg)
    _write_curve(reports_dir / "plots" / f"{run}_curve.csv", curves)
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
    cfg = TrainConfig.model_validate(state["config"])
    saved = tuple(state.get("hierarchy", {}).get("num_classes", hierarchy.num_classes))
    if tuple(saved) != tuple(hierarchy.num_classes):
        raise ValueError(f"{ckpt_path} was trained for classes {saved}, not {tuple(hierarchy.num_classes)}")
    model = build_run_model(cfg.model_copy(update={"pretrained": None}), hierarchy, in_channels)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict_samples(model: nn.Module, dataset: Dataset, hierarchy: Hierarchy, indices: Sequence[int],
                    modes: Sequence[str] = ("argmax", "jsps")) -> list[dict[str, Any]]:
    """Predictions of a few samples for figures (``hierars.plotting.plot_prediction_levels``).

    Returns a list of {"image": C×H×W, "mask": L×H×W, "preds": {mode: L×H×W}, "title": str}.
    """
    from hierars.inference import predict_levels

    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in indices:
            sample = dataset[int(i)]
            batch = pad_collate([sample])
            logits = upsample_logits(_as_level_list(model(batch["image"].to(device))), tuple(batch["mask"].shape[-2:]))
            h, w = sample["mask"].shape[-2:]
            preds = {m: predict_levels(logits, hierarchy, mode=m)[0, :, :h, :w].cpu() for m in modes}
            meta = sample.get("meta", {}) or {}
            title = str(meta.get("scene") or Path(str(meta.get("path", f"sample {i}"))).stem)
            out.append({"image": sample["image"], "mask": sample["mask"], "preds": preds, "title": f"{i}: {title}"})
    finally:
        model.train(was_training)
    return out
