"""The transfer stage (``notebooks/04_transfer.ipynb``): ``params.yaml`` → source model, target data, Table X runs.

Each experiment of ``transfer.experiments`` names

- a **source model** (Branch 2): the seed-0 model of a ``train`` run (``source_run``), or one trained here on a
  ``source`` dataset for ``source_iterations`` (the same architecture as every ``train`` run);
- a **target** dataset and tree, with only a few labelled tiles for training (``train_tiles``) and a
  validation split that the source never saw;
- the **cross-domain mapping** between the two trees (a built-in name such as ``mm5b_to_crop10m`` or a YAML).

Target images are normalised with the source model's statistics: Branch 2 sees what it was trained on.
:func:`run_experiment` then trains the Table X variants (:data:`hierars.training.transfer.VARIANTS`) at the same
budget and seeds, and :func:`summarise` turns them into a flat metrics dict and a table, with the paired
per-seed difference of every variant against fine-tuning (mean and 95 % t interval).

An experiment runs only where its data exist: :func:`skip_reason` reads what it needs from its own entry (the
target and source datasets in ``<paths.data>/processed/manifest.json``, with the same bands; the Ag-Net folder for
``agnet``) and says, in plain words, what is missing; the notebook then writes every declared output with that
reason (:func:`write_skipped_outputs`, :mod:`hierars.project.skipped`) instead of training. So ``dvc repro``
succeeds on any ``prepare.source``: the synthetic experiments skip on a folder of your own imagery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset, Subset

from hierars.comparison import paired_by_seed
from hierars.hierarchy import Hierarchy
from hierars.project.params import resolve_path, stage_paths
from hierars.project.skipped import write_skipped
from hierars.project.stages import resolve_tree
from hierars.training import TrainConfig, load_run_model, resolve_run, train_run
from hierars.training.transfer import VARIANTS, run_transfer_table
from hierars.transfer import CrossDomainMapping
from hierars.validation import validate

__all__ = ["TransferExperiment", "TransferSection", "TransferSetup", "setup_experiment", "run_experiment",
           "summarise", "skip_reason", "write_skipped_outputs", "transfer_outputs"]

Variant = Literal["scratch", "finetune", "cdks", "cdsa", "translu"]


class TransferExperiment(BaseModel):
    """One experiment of ``transfer.experiments``."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="target dataset: a prepared one (crop10m, whdld) or a raw layout (agnet)")
    target_tree: str | None = Field(None, description="tree name or YAML; default: the dataset's tree")
    mapping: str = Field(description="cross-domain mapping: built-in name or YAML path")
    source_run: str | None = Field(None, description="a train.runs entry whose seed-0 model is Branch 2")
    source: str | None = Field(None, description="else: a dataset to train the source model on, in this stage")
    source_tree: str | None = Field(None, description="tree of `source` (default: the dataset's)")
    source_iterations: int = Field(150, ge=1, description="iterations of the source model trained here")
    root: str | None = Field(None, description="raw data root for a real layout (e.g. ../shared/data/agnet)")
    source_rows: list[int] | None = Field(None, description="agnet: tile rows the source model trains on")
    target_rows: list[int] | None = Field(None, description="agnet: tile rows the few target tiles come from")
    eval_rows: list[int] | None = Field(None, description="agnet: tile rows for evaluation (seen by neither)")
    tile_size: int | None = Field(None, ge=16, description="target tile size (default: the dataset's)")
    train_tiles: int | None = Field(None, ge=1, description="labelled target tiles (default: transfer.train_tiles)")

    @model_validator(mode="after")
    def _one_source(self) -> TransferExperiment:
        if (self.source_run is None) == (self.source is None):
            raise ValueError("give exactly one of source_run (a train run's model) and source (a dataset)")
        if self.target == "agnet" and not (self.root and self.source_rows and self.target_rows and self.eval_rows):
            raise ValueError("the agnet experiment needs root, source_rows, target_rows and eval_rows")
        rows = [set(r or []) for r in (self.source_rows, self.target_rows, self.eval_rows)]
        if any(a & b for i, a in enumerate(rows) for b in rows[i + 1:]):
            raise ValueError("source_rows, target_rows and eval_rows must not overlap")
        return self


class TransferSection(BaseModel):
    """The ``transfer`` section of ``params.yaml``."""

    model_config = ConfigDict(extra="forbid")

    run: list[str] = Field(description="experiments that `dvc repro` runs (foreach)")
    variants: list[Variant] = Field(default_factory=lambda: list(VARIANTS))
    train_tiles: int = Field(16, ge=1, description="labelled target tiles used for training")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides for every variant")
    experiments: dict[str, TransferExperiment]

    @model_validator(mode="after")
    def _known(self) -> TransferSection:
        unknown = sorted(set(self.run) - set(self.experiments))
        if unknown:
            raise ValueError(f"transfer.run names {unknown}, not in transfer.experiments {sorted(self.experiments)}")
        return self


class TransferSetup(BaseModel):
    """Everything :func:`run_experiment` needs (built by :func:`setup_experiment`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    cfg: TrainConfig
    source_model: Any
    source_tree: Hierarchy
    target_tree: Hierarchy
    mapping: Any
    train_ds: Any
    val_ds: Any
    variants: list[str]
    models_dir: Path
    reports_dir: Path
    notes: dict[str, Any] = Field(default_factory=dict)


def _mapping(name: str) -> CrossDomainMapping:
    """A built-in mapping name (``mm5b_to_crop10m``) or a YAML path relative to the repository root."""
    if Path(name).suffix in (".yaml", ".yml"):
        return CrossDomainMapping.from_yaml(resolve_path(name))
    return CrossDomainMapping.builtin(name)


def _few(ds: Dataset, n: int) -> Dataset:
    """``n`` tiles spread evenly over the dataset (deterministic), so few labels still cover several scenes."""
    total = len(ds)  # type: ignore[arg-type]
    if n >= total:
        return ds
    return Subset(ds, example_indices(total, n))


def _agnet_datasets(exp: TransferExperiment, source_tree: Hierarchy, target_tree: Hierarchy
                    ) -> tuple[Dataset, Dataset, Dataset, Dataset, dict]:
    from hierars.data import GeoTiffDataset, agnet_items, band_stats

    items = agnet_items(resolve_path(exp.root))
    by_rows = {k: [it for it in items if it.extra["row"] in set(rows)]
               for k, rows in (("source", exp.source_rows), ("target", exp.target_rows), ("eval", exp.eval_rows))}
    for k, v in by_rows.items():
        if not v:
            raise ValueError(f"agnet: no tiles in the {k} rows {getattr(exp, k + '_rows')} under {exp.root}")
    stats = band_stats(by_rows["source"], desc="stats agnet source rows")

    def ds(key: str, tree: Hierarchy) -> Dataset:
        return GeoTiffDataset(by_rows[key], tree, mean=stats["mean"], std=stats["std"], source=f"agnet_{key}")

    return ds("source", source_tree), ds("eval", source_tree), ds("target", target_tree), ds("eval", target_tree), stats


def _section(params: Mapping[str, Any], name: str) -> tuple[TransferSection, TransferExperiment]:
    section = validate(TransferSection, params.get("transfer"), "transfer")
    if name not in section.experiments:
        raise ValueError(f"transfer experiment {name!r} is not in transfer.experiments {sorted(section.experiments)}")
    return section, section.experiments[name]


def skip_reason(params: Mapping[str, Any], name: str) -> str | None:
    """Why experiment ``name`` cannot run on the current settings and data, or None when it can.

    What an experiment needs follows from its entry: ``agnet`` its ``root`` folder; any other its ``target`` and
    its source dataset (``source``, or the ``train`` source of ``source_run``) prepared under
    ``<paths.data>/processed`` (the Crop10m-like and WHDLD-like domains and the rgb / s2 sources: only
    ``prepare.source: synthetic`` generates them), with the same bands (the source model reads the target's images).

    Raises:
        FileNotFoundError: ``<paths.data>/processed/manifest.json`` is missing (run the prepare stage).
        ValueError: the ``transfer`` section or ``source_run`` is invalid (configuration errors are not skips).
    """
    _, exp = _section(params, name)
    if exp.target == "agnet":
        root = resolve_path(exp.root or "")
        if not root.is_dir():
            return (f"transfer experiment {name!r} reads the Ag-Net folder transfer.experiments.{name}.root = "
                    f"{exp.root!r}, which does not exist ({root}). Set it to the Ag-Net dataset's folder.")
        return None
    base = resolve_run(params["train"], exp.source_run)
    source = exp.source or base.source
    manifest_path = stage_paths(params)["data"] / "processed" / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"transfer experiment {name!r}: {manifest_path} not found (run the prepare stage)")
    manifest = json.loads(manifest_path.read_text())
    datasets, kind = manifest.get("datasets", {}), manifest.get("kind", "unknown")
    how = (f"it wrote {sorted(datasets)} for prepare.source {kind!r}. The synthetic source generates what the "
           "default experiments (s2_crop10m, rgb_whdld) need; transfer.run lists the experiments that dvc repro runs")
    src_what = (f"the source model's dataset {source!r} (train.runs.{exp.source_run} trains on train.source)"
                if exp.source_run else f"the source dataset {source!r} (transfer.experiments.{name}.source)")
    for what, ds in ((f"the target dataset {exp.target!r}", exp.target), (src_what, source)):
        if ds not in datasets:
            return f"transfer experiment {name!r} needs {what}, which the prepare stage did not write: {how}."
    bands = {k: datasets[k].get("bands") for k in (source, exp.target)}
    if bands[source] and bands[exp.target] and list(bands[source]) != list(bands[exp.target]):
        return (f"transfer experiment {name!r}: the source model reads {source!r} bands {bands[source]}, the target "
                f"{exp.target!r} has {bands[exp.target]}; Branch 2 needs the target's images in its own bands.")
    return None


def transfer_outputs(params: Mapping[str, Any], name: str) -> dict[str, Path]:
    """The declared outputs of ``transfer@<name>`` (``dvc.yaml``)."""
    paths = stage_paths(params)
    return {"models": paths["models"] / f"transfer_{name}", "reports": paths["reports"] / "transfer" / name,
            "metrics": paths["reports"] / "metrics" / f"transfer_{name}.json",
            "figure": paths["reports"] / "figures" / f"transfer_{name}_predictions.png"}


def write_skipped_outputs(params: Mapping[str, Any], name: str, reason: str) -> dict[str, Path]:
    """Every declared output of a skipped ``transfer@<name>``: ``{"skipped": 1}`` metrics, ``table.md`` +
    ``status.json`` with the reason, the prediction figure saying "skipped", ``models/transfer_<name>/SKIPPED.md``."""
    out = transfer_outputs(params, name)
    return write_skipped(f"transfer@{name}", reason, metrics=out["metrics"], report_dir=out["reports"],
                         report_name="table.md", figures=[out["figure"]], model_dirs=[out["models"]])


def setup_experiment(params: Mapping[str, Any], name: str, *, progress: bool = True) -> TransferSetup:
    """Source model (loaded or trained), target datasets and settings of experiment ``name``."""
    from hierars.data import build_dataset

    section, exp = _section(params, name)
    paths = stage_paths(params)
    data_dir = paths["data"] / "processed"
    models_dir = paths["models"]
    reports_dir = paths["reports"] / "transfer" / name
    base = resolve_run(params["train"], exp.source_run)  # shared train settings (+ the source run's head/loss)
    cfg = TrainConfig.model_validate({**base.model_dump(), "head": "bhccm", "loss": "hsc", "progress": progress,
                                      **section.train})
    notes: dict[str, Any] = {}
    if exp.target == "agnet":
        source_tree = resolve_tree(exp.source_tree or "agnet_lclu")
        target_tree = resolve_tree(exp.target_tree or "agnet_crop")
        src_train, src_val, train_ds, val_ds, _ = _agnet_datasets(exp, source_tree, target_tree)
    else:
        source_name = exp.source or base.source
        source_tree = resolve_tree(exp.source_tree) if exp.source_tree else None
        src_stats = json.loads((data_dir / "stats.json").read_text())[source_name]
        src_train = build_dataset(data_dir, "train", source_tree, source=source_name)
        src_val = build_dataset(data_dir, "val", source_tree, source=source_name)
        source_tree = src_train.hierarchy
        tree = resolve_tree(exp.target_tree) if exp.target_tree else None
        train_ds = build_dataset(data_dir, "train", tree, source=exp.target, tile_size=exp.tile_size, stats=src_stats)
        val_ds = build_dataset(data_dir, "val", tree, source=exp.target, tile_size=exp.tile_size, stats=src_stats)
        target_tree = train_ds.hierarchy
    in_channels = int(src_train[0]["image"].shape[0])
    if exp.source_run is not None:
        ckpt = models_dir / exp.source_run / "seed0" / "ckpt.pt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"source model of transfer experiment {name!r} not found: {ckpt} "
                                    f"(run the train stage: dvc repro train@{exp.source_run})")
        source_model = load_run_model(ckpt, source_tree, in_channels)
        notes["source"] = f"train run {exp.source_run!r}, seed 0 ({ckpt})"
    else:
        src_cfg = TrainConfig.model_validate({**base.model_dump(), "head": "bhccm", "loss": "hsc", "seeds": [0],
                                              "seed": 0, "iterations": exp.source_iterations, "progress": progress,
                                              "eval_interval": exp.source_iterations, "warmup_iters": 0})
        res = train_run("source", src_cfg, source_tree, src_train, src_val, models_dir=models_dir / f"transfer_{name}",
                        reports_dir=reports_dir / "source")
        source_model = load_run_model(res["ckpts"][0], source_tree, in_channels)
        notes["source"] = f"trained here on {exp.source or 'agnet source rows'} for {exp.source_iterations} iterations"
        notes["source_metrics"] = {k: v for k, v in res["aggregate"].items() if k.startswith("mIoU") and "_hr" not in k}
    n_tiles = exp.train_tiles or section.train_tiles
    notes.update(target_tiles_available=len(train_ds), target_tiles_used=min(n_tiles, len(train_ds)),
                 val_tiles=len(val_ds))
    return TransferSetup(name=name, cfg=cfg, source_model=source_model, source_tree=source_tree,
                         target_tree=target_tree, mapping=_mapping(exp.mapping), train_ds=_few(train_ds, n_tiles),
                         val_ds=val_ds, variants=list(section.variants), models_dir=models_dir,
                         reports_dir=reports_dir, notes=notes)


def run_experiment(setup: TransferSetup) -> dict[str, dict[str, Any]]:
    """Train every variant of ``setup`` for every seed (resumable): {variant: {"per_seed", "aggregate", "ckpts"}}."""
    return run_transfer_table(setup.name, setup.source_model, setup.target_tree, setup.mapping, setup.cfg,
                              setup.train_ds, setup.val_ds, variants=setup.variants, models_dir=setup.models_dir,
                              reports_dir=setup.reports_dir)


def summarise(results: Mapping[str, Mapping[str, Any]], num_levels: int, baseline: str = "finetune",
              suffix: str = "_jsps") -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Flat metrics and table rows of a Table X run.

    Metrics: ``<variant>_mIoU_L<l>`` (mean over seeds, JSPS decoding), ``<variant>_mIoU_L<l>_hr`` (half-range),
    and for every variant but ``baseline`` the paired per-seed difference at each level,
    ``<variant>_vs_<baseline>_L<l>`` with ``_lo`` / ``_hi`` (95 % t interval over seeds).

    Rows (one per variant, levels fine → coarse as in the paper): variant, mIoU per level "mean ± half-range",
    the paired difference at the finest level with its interval, seeds.
    """
    metrics: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    base = results.get(baseline)
    for variant, res in results.items():
        row: dict[str, Any] = {"variant": variant, "seeds": len(res["per_seed"])}
        for level in range(num_levels, 0, -1):
            key = f"mIoU_L{level}{suffix}"
            vals = [float(m[key]) for m in res["per_seed"]]
            mean, hr = float(np.mean(vals)), float((max(vals) - min(vals)) / 2)
            metrics[f"{variant}_mIoU_L{level}"], metrics[f"{variant}_mIoU_L{level}_hr"] = mean, hr
            row[f"L{level}"] = f"{100 * mean:.1f} ± {100 * hr:.1f}"
            if base is not None and variant != baseline:
                diff = paired_by_seed({m["seed"]: float(m[key]) for m in res["per_seed"]},
                                      {m["seed"]: float(m[key]) for m in base["per_seed"]})
                metrics[f"{variant}_vs_{baseline}_L{level}"] = diff.mean
                metrics[f"{variant}_vs_{baseline}_L{level}_lo"] = diff.lo
                metrics[f"{variant}_vs_{baseline}_L{level}_hi"] = diff.hi
                if level == num_levels:
                    row[f"vs {baseline}, L{level}"] = diff.format()
            elif variant == baseline and level == num_levels:
                row[f"vs {baseline}, L{level}"] = "—"
        rows.append(row)
    return metrics, rows


def example_indices(n_total: int, n: int) -> Sequence[int]:
    """``n`` validation indices spread over ``n_total`` (for figures)."""
    return sorted({int(i) for i in np.linspace(0, max(0, n_total - 1), max(1, n)).round()})
