"""The training layer: run settings, the loop, evaluation, checkpoints and multi-seed runs.

Uses the core (models, losses, decoding, metrics) and the data layer (augmentation); the project layer
(``params.yaml``, the repository's paths) is never imported here.
"""

from hierars.training.checkpoint import load_checkpoint, run_metadata, save_checkpoint
from hierars.training.config import TrainConfig, TrainSection, resolve_run, run_names
from hierars.training.evaluation import evaluate, evaluate_modes, predict_samples
from hierars.training.loop import fit
from hierars.training.optim import PolyLR, build_loss, build_optimizer, build_scheduler
from hierars.training.runs import (
    aggregate_seeds,
    build_run_model,
    collect_run_metrics,
    load_run_model,
    train_run,
)
from hierars.training.sampling import IterationBatchSampler, pad_collate
from hierars.training.seeding import seed_everything

__all__ = [
    "TrainConfig", "TrainSection", "resolve_run", "run_names", "seed_everything", "IterationBatchSampler",
    "pad_collate", "build_loss", "build_optimizer", "build_scheduler", "PolyLR", "fit", "evaluate",
    "evaluate_modes", "predict_samples", "save_checkpoint", "load_checkpoint", "aggregate_seeds",
    "build_run_model", "train_run", "collect_run_metrics", "load_run_model", "run_metadata",
]
