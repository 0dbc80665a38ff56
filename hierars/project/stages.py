"""What the pipeline's notebooks share: resolving a stage's data folder and tree from ``params.yaml``.

Paths in ``params.yaml`` are relative to the repository root (:data:`hierars.project.PROJ_ROOT`); this module
turns them into absolute paths before anything below the project layer sees them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from hierars.hierarchy import Hierarchy
from hierars.project.params import resolve_path, stage_paths
from hierars.training.config import TrainConfig

__all__ = ["resolve_tree", "prepare_config", "run_data_dir", "build_run_datasets"]


def resolve_tree(tree: str | Path | Hierarchy) -> Hierarchy:
    """A tree from ``params.yaml``: a built-in name (``mm5b``) or a YAML path relative to the repository root."""
    if isinstance(tree, Hierarchy):
        return tree
    if Path(tree).suffix in (".yaml", ".yml"):
        return Hierarchy.from_yaml(resolve_path(tree))
    return Hierarchy.builtin(str(tree))


def prepare_config(params: Mapping[str, Any]):
    """The ``prepare`` section validated (``hierars.data.PrepareConfig``), its ``root`` and tree YAML made absolute.

    The synthetic source reads no root: ``root`` becomes None, so the manifest it writes stays free of this
    machine's paths whatever ``prepare.root`` says (``params.yaml`` sets ``data/own``, a DVC dependency only).
    """
    from hierars.data import PrepareConfig

    cfg = PrepareConfig.from_params(params)
    update: dict[str, Any] = {}
    if cfg.source == "synthetic":
        update["root"] = None
    elif cfg.root:
        update["root"] = str(resolve_path(cfg.root))
    if cfg.hierarchy and Path(cfg.hierarchy).suffix in (".yaml", ".yml"):
        update["hierarchy"] = str(resolve_path(cfg.hierarchy))
    return cfg.model_copy(update=update)


def run_data_dir(params: Mapping[str, Any], cfg: TrainConfig) -> Path:
    """``cfg.data_dir`` resolved, or ``<paths.data>/processed`` (the prepare stage's output)."""
    data_dir = resolve_path(cfg.data_dir) if cfg.data_dir else stage_paths(params)["data"] / "processed"
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder for train source {cfg.source!r} not found: {data_dir} "
                                "(run the prepare stage, or set train.data_dir)")
    return data_dir


def build_run_datasets(params: Mapping[str, Any], cfg: TrainConfig) -> tuple[Dataset, Dataset, Hierarchy]:
    """Train and val datasets of the run's data source (``hierars.data.build_dataset``) and their tree.

    ``cfg.data_dir`` None means ``<paths.data>/processed``; a raw dataset root such as
    ``../shared/data/gid15`` is read in place.
    """
    from hierars.data import build_dataset

    data_dir = run_data_dir(params, cfg)
    tree = resolve_tree(cfg.hierarchy) if cfg.hierarchy else None
    train_ds = build_dataset(data_dir, "train", tree, source=cfg.source)
    val_ds = build_dataset(data_dir, "val", tree, source=cfg.source)
    return train_ds, val_ds, train_ds.hierarchy
