"""Generate ``docs/settings.md``, the reference of every ``params.yaml`` key, from the pydantic models that validate it.

Each section's model (``section_models``) is walked field by field, nested models included (``prepare.synthetic``,
``prepare.folder.split``, ``transfer.experiments.<name>``, ``retrieval.tkanet``): key, type, default, allowed values
(``Literal`` choices and ``ge``/``gt``/``le``/``lt`` bounds) and meaning (the field's ``description``, else
``MEANINGS`` below). ``tests/test_settings_doc.py`` checks that the committed file equals the output and that every
field has a meaning, so the reference cannot drift from the code.

    .venv/bin/python scripts/settings_doc.py            # rewrite docs/settings.md
    .venv/bin/python scripts/settings_doc.py --check    # exit 1 if docs/settings.md is stale
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
from pydantic import BaseModel, Field
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "settings.md"


class PathsSection(BaseModel):
    """``paths``: where stage outputs go (``hierars.project.stage_paths``; relative paths resolve from the
    repository root)."""

    data: str = Field("data", description="data folder; `prepare` writes `<data>/processed`")
    models: str = Field("models", description="trained models (`<models>/<run>/seed<k>/ckpt.pt`)")
    reports: str = Field("reports", description="metrics, plots, figures, tables, executed notebooks")


class TopLevel(BaseModel):
    """Keys outside the sections."""

    seed: int = Field(0, description="shared seed: prepare's splits and synthetic data, the retrieval stage "
                                     "(training runs use `train.seed` / `train.seeds`)")


#: Meanings of fields whose model gives no ``description`` (key: dotted path with ``<name>`` for dict entries).
MEANINGS: dict[str, str] = {
    # prepare
    "prepare.source": "which data the pipeline runs on: generated (`synthetic`) or a real layout read in place "
                      "from `root` (`folder`: any images + labels, described by `prepare.folder`)",
    "prepare.root": "folder of the real dataset (relative to the repository root or absolute); null for synthetic",
    "prepare.hierarchy": "label tree: a built-in name (`mm5b`, `gid15`, ...) or a YAML path; needed by `folder`",
    "prepare.seed": "seed of splits and synthetic data; null = the top-level `seed`",
    "prepare.sources": "mm5b layout: which per-source folders (`rgb`, `gf2`, `s2`) to prepare",
    "prepare.tile_size": "tile edge in pixels per prepared dataset (e.g. `{s2: 64}`); unset: the dataset's default",
    "prepare.val_fraction": "gid15: share of images in val (stratified by scene)",
    "prepare.val_rows": "agnet: tile-grid rows held out for val (spatial split)",
    "prepare.buffer_rows": "agnet: rows dropped between train and val",
    "prepare.strict": "label values outside the tree are errors (true) or become ignore (false)",
    "prepare.synthetic.n_scenes": "number of generated scenes",
    "prepare.synthetic.scene_size_m": "scene edge in metres (a multiple of 20 m)",
    "prepare.synthetic.haze": "strength of the simulated haze",
    "prepare.synthetic.noise": "sensor noise (in reflectance percent)",
    "prepare.crop10m.n_scenes": "number of Crop10m-like scenes (0: skip this domain)",
    "prepare.crop10m.scene_size_m": "scene edge in metres",
    "prepare.crop10m.val_every": "every k-th scene is a validation scene",
    "prepare.whdld.n_scenes": "number of WHDLD-like scenes (0: skip this domain)",
    "prepare.whdld.scene_size_m": "scene edge in metres",
    "prepare.whdld.val_every": "every k-th scene is a validation scene",
    "prepare.retrieval.per_class": "archive patches per scene class (0: no retrieval archive)",
    "prepare.retrieval.patch_px": "patch edge in pixels",
    "prepare.retrieval.query_fraction": "share of patches used as queries",
    "prepare.folder.images": "glob of the images, relative to `root` (`**` recurses)",
    "prepare.folder.labels": "glob of the labels (GeoTIFF, PNG or JPEG), relative to `root`",
    "prepare.folder.image_suffix": "cut from the end of an image path to get its pairing key (default: extension)",
    "prepare.folder.label_suffix": "cut from the end of a label path to get its pairing key (default: extension)",
    "prepare.folder.bands": "1-based band numbers to keep (GDAL / QGIS numbering); null = all",
    "prepare.folder.band_names": "names of the kept bands; null = the band descriptions, else `B<n>`",
    "prepare.folder.nodata": "image nodata value for rasters that declare none",
    "prepare.folder.ignore": "raw label values meaning 'no label' (become 255, ignored in training)",
    "prepare.folder.mapping": "raw label value -> leaf (index 0..C-1 or leaf name); null = the tree's label values",
    "prepare.folder.fit": "images not a multiple of the tile: `pad`, `crop` or `cover` (overlapping last tile)",
    "prepare.folder.split": "how images are split into train and val (`kind`: random, files or blocks)",
    "prepare.folder.split.kind": "split kind: `random` (seeded, by raster), `files` (list files) or `blocks` "
                                 "(spatial blocks)",
    "prepare.folder.split.val_fraction": "share of rasters (random) or of occupied blocks (blocks) in val",
    "prepare.folder.split.train_list": "files: list file of the train images (one per line: path, name or key)",
    "prepare.folder.split.val_list": "files: list file of the val images (one per line: path, name or key)",
    "prepare.folder.split.block_size": "blocks: block edge, in map units of the CRS or in pixels (`block_units`)",
    "prepare.folder.split.block_units": "blocks: `map` (CRS units) or `pixels`",
    "prepare.folder.split.buffer": "blocks: rings of blocks around each val block dropped from train",
    # train
    "train.arch": "segmentation architecture (segmentation_models_pytorch name: fpn, upernet, unet, ...)",
    "train.encoder": "encoder (timm via smp: `tu-<timm name>`)",
    "train.head": "hierarchical head: flat (finest level, lifted by the tree), independent, bhccm, hssn",
    "train.fusion": "BHCCM fusion of the levels' features",
    "train.decoder_channels": "decoder width (FPN's GroupNorm needs a multiple of 32)",
    "train.loss": "objective: ce (per-level cross-entropy), hsc (CE + path KL), hssn (tree-min loss, hssn head)",
    "train.iterations": "training iterations",
    "train.batch_size": "batch size",
    "train.optimizer": "optimiser",
    "train.lr": "peak learning rate",
    "train.weight_decay": "weight decay (not applied to norms and biases)",
    "train.poly_power": "power of the polynomial learning-rate decay",
    "train.min_lr": "learning rate at the end of the decay",
    "train.warmup_iters": "linear warm-up iterations (must be < iterations)",
    "train.grad_clip": "clip the gradient norm to this value; null = no clipping",
    "train.log_interval": "iterations between rows of the training curve (loss, lr)",
    "train.eval_batch_size": "batch size of evaluation; null = batch_size",
    "train.progress": "show progress bars (display only)",
    "train.max_train_samples": "train on the first N samples only (tests, quick checks)",
    "train.seed": "seed of a single-seed run (ignored when `seeds` is set)",
    "train.num_workers": "DataLoader worker processes",
    "train.device": "torch device (cpu, cuda, cuda:1, ...)",
    "train.runs": "named runs: each entry overrides any of the settings above; `dvc repro` trains one stage "
                  "per entry (`train@<name>`)",
    # transfer
    "transfer.variants": "variants compared at the same budget and seeds (Table X)",
    "transfer.experiments": "experiments by name (the fields below, per experiment)",
    # retrieval
    "retrieval.source": "archive: `synthetic` (prepare's retrieval archive) or `gid15` (read in place from `root`)",
    "retrieval.num_threads": "torch threads of the stage (null keeps torch's default)",
    "retrieval.level": "stage-2 proportions: `all` tree levels concatenated, or one level index",
    "retrieval.mode": "proportions from JSPS decoding, argmax, or soft probabilities",
    "retrieval.weight": "raised weight of `weighted_class` in the HIR row (Table V: w_buildings = 4)",
    "retrieval.gallery_k": "results shown per method in the gallery figure",
    "retrieval.tkanet": "TKANet training (the fields below)",
    "retrieval.tkanet.epochs": "training epochs",
    "retrieval.tkanet.batch_size": "batch size",
    "retrieval.tkanet.lr": "learning rate",
}


def section_models() -> dict[str, type[BaseModel]]:
    """``params.yaml`` section -> the pydantic model that validates it (the stages' own models)."""
    from hierars.data import PrepareConfig
    from hierars.project.fidelity import FidelitySection
    from hierars.project.retrieval_stage import RetrievalStageConfig
    from hierars.project.transfer_stage import TransferSection
    from hierars.training import TrainSection

    return {"prepare": PrepareConfig, "train": TrainSection, "transfer": TransferSection,
            "retrieval": RetrievalStageConfig, "fidelity": FidelitySection}


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _models_in(tp: Any) -> tuple[str, list[type[BaseModel]]]:
    """``("", [M])`` for a model field, ``(".<name>", [M])`` for ``dict[str, M]``, several for a union of models."""
    tp = _strip_optional(tp)
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "", [tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return ".<name>", [args[1]]
    if origin in (typing.Union, types.UnionType) and args and all(
            isinstance(a, type) and issubclass(a, BaseModel) for a in args):
        return "", list(args)
    return "", []


def _type_name(tp: Any) -> str:
    text = str(tp) if not isinstance(tp, type) else tp.__name__
    for junk in ("typing.", "hierars.data.config.", "hierars.project.transfer_stage.",
                 "hierars.project.retrieval_stage.", "annotated_types."):
        text = text.replace(junk, "")
    text = text.replace("NoneType", "None")
    if typing.get_origin(_strip_optional(tp)) is typing.Literal:
        return "choice" + (" or None" if _strip_optional(tp) is not tp else "")
    return text


def _allowed(field) -> str:
    parts = []
    tp = _strip_optional(field.annotation)
    if typing.get_origin(tp) is typing.Literal:
        parts.append(" / ".join(f"`{v}`" for v in typing.get_args(tp)))
    for m in field.metadata:
        for cls, attr, op in ((at.Ge, "ge", "≥"), (at.Gt, "gt", ">"), (at.Le, "le", "≤"), (at.Lt, "lt", "<")):
            if isinstance(m, cls):
                parts.append(f"{op} {getattr(m, attr)}")
        if isinstance(m, at.MinLen):
            parts.append(f"at least {m.min_length} item(s)")
    return ", ".join(parts)


def _default(field, instance: BaseModel | None = None, name: str = "") -> str:
    if instance is not None:
        d = getattr(instance, name)
    elif field.default is PydanticUndefined:
        return "required" if field.default_factory is None else f"`{field.default_factory()!r}`"
    else:
        d = field.default
    if isinstance(d, BaseModel):
        return "(below)"
    return "`null`" if d is None else f"`{d!r}`".replace("True", "true").replace("False", "false")


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    return text.split(". ")[0].rstrip(".")


def rows(prefix: str, model: type[BaseModel], missing: list[str], instance: BaseModel | None = None
         ) -> list[tuple[str, list[list[str]], str]]:
    """Tables for ``model`` at ``prefix``: ``[(table prefix, [[key, type, default, allowed, meaning]], doc)]``.

    ``instance``: the parent field's default (``prepare.crop10m`` defaults differ from ``DomainConfig``'s own).
    """
    table, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        suffix, models = _models_in(field.annotation)
        meaning = field.description or MEANINGS.get(key.replace(".<name>", "")) or MEANINGS.get(key)
        if not meaning and len(models) == 1 and models[0].__doc__:
            meaning = _first_sentence(models[0].__doc__).replace("``", "`") + " (below)"
        if not meaning:
            missing.append(key)
            meaning = ""
        table.append([f"`{key}`", _type_name(field.annotation), _default(field, instance, name), _allowed(field),
                      meaning])
        for sub in models:
            default = getattr(instance, name) if instance is not None else field.default
            nested.append((key + suffix, sub, default if isinstance(default, sub) else None))
    out = [(prefix, table, (model.__doc__ or "").strip())]
    merged: dict[str, list] = {}
    defaults: dict[str, BaseModel | None] = {}
    for key, sub, default in nested:  # union members (split kinds) share one table, keys listed once
        merged.setdefault(key, []).append(sub)
        defaults[key] = default
    for key, subs in merged.items():
        if len(subs) == 1:
            out += rows(key, subs[0], missing, defaults[key])
            continue
        seen: dict[str, list[str]] = {}
        docs = []
        for sub in subs:
            kind = sub.model_fields.get("kind")
            tag = typing.get_args(kind.annotation)[0] if kind is not None else sub.__name__
            docs.append(f"`{tag}`: " + " ".join((sub.__doc__ or "").split()))
            for _, t, _ in rows(key, sub, missing)[:1]:
                for r in t:
                    if r[0] in seen:  # a field of several kinds (kind itself, val_fraction): one row
                        seen[r[0]][3] = ", ".join(dict.fromkeys(filter(None, (seen[r[0]][3], r[3]))))
                        seen[r[0]][4] = seen[r[0]][4].split(") ", 1)[-1] if r[0] != f"`{key}.kind`" else r[4]
                    else:
                        r[4] = f"({tag}) {r[4]}" if r[0] != f"`{key}.kind`" else r[4]
                        seen[r[0]] = r
        out.append((key, list(seen.values()), "\n".join(docs)))
    return out


HEADER = """# Settings reference (`params.yaml`)

Every key that `params.yaml` accepts, generated from the pydantic models that validate each section
(`scripts/settings_doc.py`; `tests/test_settings_doc.py` keeps this file equal to its output). Unknown keys are
errors. Relative paths resolve from the repository root. A notebook run takes `params_file` and optional
`overrides` (deep-merged); `dvc exp run -S key=value` changes one key. Which stage re-runs on which key:
the stage's `params` in `dvc.yaml` (checked by `tests/test_pipeline_decl.py`).
"""


def render() -> tuple[str, list[str]]:
    """The Markdown text and the keys that have no meaning (neither a description nor a ``MEANINGS`` entry)."""
    missing: list[str] = []
    parts = [HEADER]
    sections = {"": TopLevel, "paths": PathsSection, **section_models()}
    for section, model in sections.items():
        parts.append(f"\n## `{section}`\n" if section else "\n## Top level\n")
        for prefix, table, doc in rows(section, model, missing):
            if prefix != section:
                parts.append(f"\n### `{prefix}`\n")
            if doc:
                doc = doc.replace("``", "`").replace(":class:", "")
                parts.append("\n" + " ".join(doc.split()) + "\n" if "\n`" not in doc else "\n" + doc + "\n")
            parts.append("\n| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n")
            parts += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |\n" for r in table]
    return "".join(parts), missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/settings.md differs from the output")
    args = ap.parse_args(argv)
    text, missing = render()
    if missing:
        print(f"settings without a meaning (add a Field description or a MEANINGS entry): {missing}",
              file=sys.stderr)
        return 1
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is stale: run scripts/settings_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
