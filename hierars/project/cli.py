"""The ``hierars`` command line: ``predict`` (maps for GIS), ``index`` and ``search`` (HIR-style retrieval).

::

    hierars index IMAGES... --model SEGMENTER --embedder TKANET -o INDEX [--tree gid15] [--ivf 1024]
    hierars search INDEX QUERY_IMAGE [QUERY_IMAGE...] -k 10 [--method hir|cbir|lcbir] [-K 75]
                   [--level all|0|1|2] [--weight building=4] [--level-weights 1 1 1]

``IMAGES`` are GeoTIFFs or folders (searched recursively for ``*.tif`` / ``*.tiff``). ``SEGMENTER`` is a
training checkpoint (``models/<run>/seed<k>/ckpt.pt``), loaded by :func:`hierars.load_model` with the tree and
normalisation it carries (``--tree`` may name the same tree). ``TKANET`` is a
:func:`hierars.retrieval.save_tkanet` checkpoint (it normalises its own input). ``--mean/--std`` or ``--stats FILE``
(``{"mean", "std"}`` or the prepare stage's ``stats.json`` with ``--stats-source``) override the segmenter's stored
normalisation; the one used is written into the index and reused for queries.

``hierars predict`` (:mod:`hierars.project.predict_cmd`) writes per-level GeoTIFFs, confidence, a
confidence-aware granularity map and QGIS styles for images; ``hierars train`` trains a run.

``search`` reloads the segmenter and embedder recorded in the index (or ``--model`` / ``--embedder``) and
refuses models or a tree that differ from the ones the index was built with.

Subcommands are registered in :data:`COMMANDS` (name → function adding the subparser); each sets
``func`` on its namespace and returns an exit code. Errors print ``hierars <cmd>: error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hierars.project.predict_cmd import add_predict
from hierars.project.train_cmd import add_train

__all__ = ["main", "build_parser", "COMMANDS"]

IMAGE_SUFFIXES = (".tif", ".tiff")


class CLIError(ValueError):
    """A user error reported without a traceback."""


# ------------------------------------------------------------------------------------------ helpers
def _expand_images(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise CLIError(f"no .tif images under folder {p}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"image not found: {p}")
    if not out:
        raise CLIError("empty archive: no images given")
    return out


def _read_image(path: Path) -> np.ndarray:
    from hierars.data.geotiff import read_raster

    a = read_raster(path).astype(np.float32)
    if not np.isfinite(a).all():
        raise CLIError(f"{path}: NaN / inf pixel values")
    return a


def _load_tree(spec: str, ckpt: Path):
    from hierars import Hierarchy

    try:
        return Hierarchy.load(spec)
    except Exception as e:  # noqa: BLE001 - HierarchyError / FileNotFoundError alike
        raise CLIError(f"cannot load tree {spec!r} given for {ckpt}: {e}") from None


def _load_segmenter(ckpt: Path, tree: str | None, device: str):
    """The segmenter of a self-contained checkpoint (:func:`hierars.load_model`), its tree, and what the index
    records (tree name, class counts, band count, settings, stored normalisation). ``tree`` (a name or YAML), if
    given, must be the stored tree."""
    from hierars.data import load_model

    saved = load_model(ckpt, device)
    h = saved.hierarchy
    if tree:
        other = _load_tree(tree, ckpt)
        if other.names != h.names:
            raise CLIError(f"{ckpt} was trained with the tree {h.name!r} {list(h.num_classes)}; --tree {tree!r} "
                           f"is a different tree {list(other.num_classes)}")
    info = {"tree": h.name, "num_classes": list(h.num_classes), "in_channels": saved.in_channels,
            "config": saved.config, "mean": saved.mean, "std": saved.std, "bands": saved.band_names}
    return saved.model, h, info


def _normalisation(args: argparse.Namespace, info: dict[str, Any], bands: int) -> tuple[list | None, list | None, str]:
    """Segmenter input mean / std and where they came from: ``--mean/--std``, ``--stats``, else the checkpoint's."""
    if args.mean or args.std:
        if not (args.mean and args.std):
            raise CLIError("give both --mean and --std")
        mean, std, where = list(args.mean), list(args.std), "--mean/--std"
    elif args.stats:
        stats_path = Path(args.stats)
        if not stats_path.is_file():
            raise FileNotFoundError(f"stats file not found: {stats_path}")
        stats = json.loads(stats_path.read_text())
        source = args.stats_source or info["config"].get("source")
        if "mean" not in stats:
            if source not in stats:
                raise CLIError(f"{stats_path} has no entry {source!r}; entries: {sorted(stats)} (use --stats-source)")
            stats = stats[source]
        mean, std, where = list(stats["mean"]), list(stats["std"]), f"{stats_path} [{source}]"
    elif info.get("mean") is None:
        return None, None, "none (the model was trained on raw band values)"
    else:
        mean, std, where = list(info["mean"]), list(info["std"]), "the checkpoint's (as in training)"
    if len(mean) != bands or len(std) != bands:
        raise CLIError(f"normalisation from {where} has {len(mean)} means / {len(std)} stds for {bands}-band images")
    return mean, std, where


def _class_weights(items: Sequence[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for it in items:
        name, sep, val = it.rpartition("=")
        if not sep or not name:
            raise CLIError(f"--weight expects NAME=WEIGHT, got {it!r}")
        try:
            out[name] = float(val)
        except ValueError:
            raise CLIError(f"--weight {it!r}: {val!r} is not a number") from None
    return out


def _level(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"level must be 'all' or an int, got {text!r}") from None


# ------------------------------------------------------------------------------------------ index
def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="embed and segment archive images once; write an index file",
                       description="Build a retrieval index: TKANet embeddings + class proportions of every image.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="GeoTIFFs or folders of them")
    p.add_argument("--model", required=True, metavar="SEGMENTER", help="segmenter training checkpoint (ckpt.pt)")
    p.add_argument("--embedder", required=True, metavar="TKANET", help="TKANet checkpoint (save_tkanet)")
    p.add_argument("-o", "--output", required=True, metavar="INDEX", help="index file to write")
    p.add_argument("--tree", help="tree name or YAML (default: the one named in the checkpoint)")
    p.add_argument("--mode", choices=("jsps", "argmax", "soft"), default="jsps", help="proportion mode")
    p.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean", help="stage-1 distance")
    p.add_argument("--ivf", type=int, metavar="NLIST", help="IVF index with NLIST lists (default: exact)")
    p.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    p.add_argument("--labels", choices=("folder", "none"), default="folder",
                   help="store each image's parent folder name as its label (default) or none")
    _add_norm_args(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_index)


def _add_norm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("segmenter input normalisation")
    g.add_argument("--stats", metavar="FILE", help='JSON {"mean", "std"} or the prepare stage\'s stats.json')
    g.add_argument("--stats-source", metavar="NAME", help="entry of stats.json (default: the checkpoint's source)")
    g.add_argument("--mean", type=float, nargs="+")
    g.add_argument("--std", type=float, nargs="+")


def cmd_index(args: argparse.Namespace) -> int:
    from hierars.retrieval import ArchiveIndex, load_tkanet

    files = _expand_images(args.images)
    ckpt, emb_path = Path(args.model).resolve(), Path(args.embedder).resolve()
    segmenter, h, info = _load_segmenter(ckpt, args.tree, args.device)
    embedder = load_tkanet(emb_path).to(args.device)
    bands = int(_read_image(files[0]).shape[0])
    for what, want in (("segmenter", info["in_channels"]), ("embedder", embedder.in_channels)):
        if want != bands:
            raise CLIError(f"{files[0]} has {bands} bands but the {what} expects {want}")
    mean, std, norm_from = _normalisation(args, info, bands)
    print(f"segmenter input normalisation: {norm_from}", file=sys.stderr)

    class Images:
        def __len__(self) -> int:
            return len(files)

        def __iter__(self):
            for f in files:
                a = _read_image(f)
                if a.shape[0] != bands:
                    raise CLIError(f"{f} has {a.shape[0]} bands, the other images {bands}")
                yield a

    labels = [f.parent.name for f in files] if args.labels == "folder" else None
    index = ArchiveIndex.build(
        Images(), embedder, segmenter, h, files=[str(f) for f in files], labels=labels, mode=args.mode,
        seg_mean=mean, seg_std=std, batch_size=args.batch_size, metric=args.metric, ivf_nlist=args.ivf,
        nprobe=args.nprobe, segmenter_name=str(ckpt), embedder_name=str(emb_path), progress=not args.no_progress,
        meta={"tree_spec": args.tree or info["tree"], "normalisation": norm_from},
    )
    index.save(args.output)
    print(f"wrote {args.output}: {index!r}")
    return 0


# ----------------------------------------------------------------------------------------- search
def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search an index with query images; print ranked files and distances",
                       description="Query an index built by `hierars index` (HIR two-stage by default).")
    p.add_argument("index", metavar="INDEX")
    p.add_argument("queries", nargs="+", metavar="QUERY_IMAGE")
    p.add_argument("-k", type=int, default=10, help="results per query")
    p.add_argument("-K", "--shortlist", type=int, default=75, help="HIR stage-1 shortlist size")
    p.add_argument("--method", choices=("hir", "cbir", "lcbir"), default="hir")
    p.add_argument("--level", type=_level, default="all", help="tree level of the stage-2 proportions, or 'all'")
    p.add_argument("--weight", action="append", metavar="NAME=W", help="class weight, e.g. building=4 (repeatable)")
    p.add_argument("--level-weights", type=float, nargs="+", help="per-level weights with --level all")
    p.add_argument("--model", metavar="SEGMENTER", help="segmenter checkpoint (default: the index's)")
    p.add_argument("--embedder", metavar="TKANET", help="TKANet checkpoint (default: the index's)")
    p.add_argument("--tree", help="tree name or YAML (default: the index's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from hierars.retrieval import ArchiveIndex, cbir, compute_features, hir, lcbir, load_tkanet

    index = ArchiveIndex.load(args.index)
    weights = _class_weights(args.weight)
    index.check_k(args.k)  # fail fast on k, weights and level, before loading any model
    if args.method != "cbir":
        index.layout.weights(args.level, weights, args.level_weights)
    ckpt = Path(args.model or (index.segmenter or {}).get("name", ""))
    emb_path = Path(args.embedder or (index.embedder or {}).get("name", ""))
    for what, p, opt in (("segmenter", ckpt, "--model"), ("embedder", emb_path, "--embedder")):
        if not p.is_file():
            raise FileNotFoundError(f"{what} checkpoint of the index not found: {p} (pass {opt})")
    segmenter, h, _ = _load_segmenter(ckpt, args.tree, args.device)
    embedder = load_tkanet(emb_path).to(args.device)
    index.check_compatible(segmenter=segmenter, embedder=embedder, tree=h, source=f"index {args.index}")
    results = []
    for q in map(Path, args.queries):
        img = _read_image(q)
        index.check_bands(int(img.shape[0]))
        emb, props = compute_features(img, embedder, segmenter, h, mode=index.meta.get("mode", "jsps"),
                                      seg_mean=index.meta.get("seg_mean"), seg_std=index.meta.get("seg_std"))
        stage2 = {"level": args.level, "class_weights": weights, "level_weights": args.level_weights}
        if args.method == "cbir":
            res = cbir(index, emb, args.k)
        elif args.method == "lcbir":
            res = lcbir(index, props, args.k, **stage2)
        else:
            res = hir(index, emb, props, args.k, args.shortlist, **stage2)
        rows = [{"rank": r + 1, "distance": float(res.distances[0, r]),
                 "stage1_distance": None if res.stage1_distances is None else float(res.stage1_distances[0, r]),
                 "label": index.labels[i] if index.labels else "",
                 "file": index.files[i] if index.files else str(i)} for r, i in enumerate(res.indices[0])]
        results.append({"query": str(q), "method": args.method, "results": rows})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for block in results:
        print(f"query {block['query']}  ({block['method']}, k={args.k})")
        print(f"{'rank':>4}  {'distance':>10}  {'stage1':>10}  {'label':<20}  file")
        for r in block["results"]:
            s1 = "" if r["stage1_distance"] is None else f"{r['stage1_distance']:.4f}"
            print(f"{r['rank']:>4}  {r['distance']:>10.4f}  {s1:>10}  {r['label']:<20}  {r['file']}")
    return 0


# ------------------------------------------------------------------------------------------- main
#: subcommand name → function adding its parser to the subparsers.
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {"index": _add_index, "search": _add_search,
                                                                   "train": add_train,
                                                                   "predict": add_predict}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hierars", description="hierars: hierarchical land-cover tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hierars`` console script; returns the exit code (2 on a user error)."""
    args = build_parser().parse_args(argv)
    from hierars.hierarchy import HierarchyError

    try:
        return int(args.func(args) or 0)
    except (CLIError, OSError, HierarchyError, ValueError) as e:  # OSError: missing / unwritable files
        print(f"hierars {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
