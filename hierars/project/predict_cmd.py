"""``hierars predict``: per-level maps of GeoTIFFs from a trained model, styled for QGIS.

::

    hierars predict MODEL IMAGE [IMAGE...] -o OUT [--granularity-threshold T] [--window 512] [--overlap 64]
                    [--bands 4 3 2] [--nodata 0] [--no-confidence] [--device cpu] [--no-progress]

``MODEL`` is a training checkpoint (``models/<run>/seed<k>/ckpt.pt``); it carries its tree, bands and
normalisation (:func:`hierars.load_model`), so nothing else is needed. ``IMAGE`` are GeoTIFFs or folders of them
(searched recursively). For each image ``<stem>.tif`` it writes into ``OUT`` (:meth:`SavedModel.predict_raster`,
JSPS decoding, same CRS and transform as the input)::

    <stem>_pred.tif                 the JSPS path: band l = class ids of level l (colours/names in .aux.xml)
    <stem>_pred_L<l>.tif + .qml     level l alone: uint8 class ids, GDAL colour table, QGIS paletted style
    <stem>_pred_confidence.tif      float32, band l = probability (0..1) of level l's class; NaN = no data
    <stem>_pred_granularity.tif + .qml   with --granularity-threshold T: node id of the deepest level of the path
                                    whose probability >= T (0 = root; hierars.granularity numbers the nodes)

Errors (missing image, bands that do not match the model, an unreadable model) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["add_predict", "cmd_predict", "OUTPUT_SUFFIX"]

#: ``<stem><OUTPUT_SUFFIX>.tif`` is the main output of an image ``<stem>.tif``
OUTPUT_SUFFIX = "_pred"


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict GeoTIFFs with a trained model: per-level maps + QGIS styles",
                       description="Per-level class maps (JSPS path), per-level confidence and optionally a "
                                   "confidence-aware granularity map for each image, as GeoTIFFs with the input's "
                                   "CRS and transform and a QGIS style (.qml) per class map.")
    p.add_argument("model", metavar="MODEL", help="training checkpoint, e.g. models/<run>/seed0/ckpt.pt")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="GeoTIFFs or folders of them")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument("--granularity-threshold", type=float, metavar="T",
                   help="also write <stem>_pred_granularity.tif: each pixel at the deepest level whose path "
                        "probability is >= T (e.g. 0.7)")
    p.add_argument("--no-confidence", action="store_true", help="do not write the confidence GeoTIFF")
    p.add_argument("--window", type=int, default=512, help="sliding-window size in pixels (a multiple of 32)")
    p.add_argument("--overlap", type=int, default=64, help="overlap of neighbouring windows in pixels")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--bands", type=int, nargs="+", metavar="B",
                   help="1-based bands of the images to use, in the model's order (default: by band name or all)")
    p.add_argument("--nodata", type=float, help="input value meaning no data (default: the image's, else the "
                                                "training data's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from hierars.data import load_model
    from hierars.project.cli import CLIError, _expand_images

    if args.window < 32 or args.window % 32:
        raise CLIError(f"--window must be a multiple of 32 (the models' output stride), got {args.window}")
    files = _expand_images(args.images)
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise CLIError(f"several images are named {dup}: their outputs would collide; predict them into "
                       "different folders")
    model = load_model(Path(args.model), args.device)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"output {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{model!r}", file=sys.stdout)
    bar = tqdm(files, desc="images", unit="image", disable=args.no_progress or len(files) == 1)
    for f in bar:
        bar.set_postfix_str(f.name, refresh=False)
        res = model.predict_raster(f, out_dir / f"{f.stem}{OUTPUT_SUFFIX}.tif", window=args.window,
                                   overlap=args.overlap, batch_size=args.batch_size,
                                   granularity=args.granularity_threshold, confidence=not args.no_confidence,
                                   nodata=args.nodata, bands=args.bands, progress=not args.no_progress)
        extra = [p.name for p in (res.confidence_path, res.granularity_path) if p is not None]
        tqdm.write(f"{f}: wrote {res.path.name}, {len(res.level_paths)} level maps + .qml"
                   + (f", {', '.join(extra)}" if extra else "") + f" in {out_dir}", file=sys.stdout)
    return 0
