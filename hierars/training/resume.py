"""Where a run's periodic checkpoints live so that an interrupted ``dvc repro`` resumes instead of starting over.

DVC deletes a stage's outputs (``models/<run>``) before it runs the stage again, so checkpoints written there
are gone when an interrupted stage is re-run. :func:`hierars.training.train_run` therefore writes them to a
folder outside the outputs, ``<models>/.resume/<run>/<key>/seed<k>/ckpt.pt`` (git- and DVC-ignored), and only
the final checkpoint to ``models/<run>/seed<k>/``. The ``key`` is a hash of everything that decides the result:

- the run's settings (without the fields a resume may change, ``RESUME_FREE_FIELDS``, and the seed, which is
  in the path), the tree, the band count;
- the data: the number of train / val samples and a hash of the first and last training samples;
- the code: a hash of the installed ``hierars`` package's files (``*.py`` and tree YAMLs).

So a changed setting, tree, dataset or package version never resumes a stale checkpoint: it gets a new key,
and the folders of older keys of that run are removed when training starts. ``rm -rf models/.resume``
discards every partial run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hierars.hierarchy import Hierarchy
from hierars.training.checkpoint import RESUME_FREE_FIELDS
from hierars.training.config import TrainConfig
from hierars.training.sampling import SeededSamples

__all__ = ["RESUME_FOLDER", "resume_key", "resume_dir", "prune_stale_resume", "package_fingerprint"]

log = logging.getLogger(__name__)

#: name of the resume folder under the models folder
RESUME_FOLDER = ".resume"


@lru_cache(maxsize=1)
def package_fingerprint() -> str:
    """sha256 (16 hex) of the ``hierars`` package's ``*.py`` and ``*.yaml`` files (paths and contents)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".yaml") and p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _sample_digest(ds: Dataset, i: int) -> str:
    sample = SeededSamples(ds, 0)[(0, i)]  # random transforms, if any, under a fixed seed: the same every time
    h = hashlib.sha256()
    for key in ("image", "mask"):
        arr = np.ascontiguousarray(torch.as_tensor(sample[key]).cpu().numpy())
        h.update(f"{key}{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def resume_key(cfg: TrainConfig, hierarchy: Hierarchy, train_ds: Dataset, val_ds: Dataset | None) -> str:
    """16-hex key of what decides a run's result (settings, tree, bands, data, code); see the module docstring."""
    n = len(train_ds)  # type: ignore[arg-type]
    settings = {k: v for k, v in cfg.model_dump().items() if k not in RESUME_FREE_FIELDS | {"seed", "seeds"}}
    spec: dict[str, Any] = {
        "settings": settings, "tree": hierarchy.to_dict(), "in_channels": int(train_ds[0]["image"].shape[0]),
        "n_train": n, "n_val": None if val_ds is None else len(val_ds),  # type: ignore[arg-type]
        "data": [_sample_digest(train_ds, 0), _sample_digest(train_ds, n - 1)], "code": package_fingerprint(),
    }
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def resume_dir(root: str | Path, run: str, key: str, seed: int) -> Path:
    """``root/<run>/<key>/seed<seed>``: the periodic checkpoints of one seed of one run."""
    return Path(root) / run / key / f"seed{seed}"


def prune_stale_resume(root: str | Path, run: str, key: str) -> list[Path]:
    """Delete ``root/<run>/<other key>/`` folders (checkpoints of older settings, data or code); returns them."""
    run_dir = Path(root) / run
    stale = [p for p in sorted(run_dir.glob("*")) if p.is_dir() and p.name != key] if run_dir.is_dir() else []
    for p in stale:
        log.info("removing stale resume checkpoints %s (settings, data or code changed)", p)
        shutil.rmtree(p, ignore_errors=True)
    return stale
