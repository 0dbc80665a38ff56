"""Run settings: :class:`TrainConfig` (one run) and the ``train`` section with named ``runs``.

Plain data validated by pydantic (unknown keys are errors); nothing here touches files or models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hierars.validation import SettingsError, closest, validate

__all__ = ["TrainConfig", "TrainSection", "run_names", "resolve_run"]


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
    num_threads: int | None = Field(None, ge=1, description="torch.set_num_threads; None keeps the default. With "
                                    "seed_workers > 1: the threads shared out among the workers (at least 1 each)")
    seed_workers: int = Field(1, ge=1, description="train this many seeds at once, one forked process each (Linux; "
                              "elsewhere, under torchrun, or with one seed: one after another). Same results as "
                              "one after another with the same threads per seed")
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
    return list(validate(TrainSection, train_section, "train").runs)


def resolve_run(train_section: Mapping[str, Any], run: str | None = None) -> TrainConfig:
    """Merge ``train.runs[run]`` over the shared ``train`` settings and validate the result.

    Raises:
        ValueError: ``run`` is not in ``train.runs`` (names the closest run), or the merged settings are invalid
            (:class:`hierars.validation.SettingsError`: one line per bad key, e.g. ``train.runs.flat.lr: must be
            > 0``, with the closest valid key for a typo).
    """
    if not isinstance(train_section, Mapping):
        raise SettingsError(f"train: expected a mapping of settings, got {type(train_section).__name__} "
                            f"{train_section!r}")
    shared = {k: train_section[k] for k in train_section if k != "runs"}  # other runs' entries are not read
    runs = train_section.get("runs") or {}
    if not isinstance(runs, Mapping):
        raise ValueError(f"params 'train.runs' must map run names to settings, got {type(runs).__name__}")
    base = validate(TrainConfig, shared, "train").model_dump(exclude_unset=True)
    if run is not None:
        if run not in runs:
            hint = closest(run, list(runs))
            raise ValueError(f"run {run!r} is not in params 'train.runs' ({f'did you mean {hint!r}? ' if hint else ''}"
                             f"available: {sorted(runs)})")
        if not isinstance(runs[run], Mapping):
            raise ValueError(f"params 'train.runs.{run}' must be a mapping of settings, got {type(runs[run]).__name__}")
        base.update(runs[run])
    own = set(runs[run]) if run is not None else set()
    return validate(TrainConfig, base, lambda loc: f"train.runs.{run}" if not loc or loc[0] in own else "train")
