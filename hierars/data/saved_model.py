"""A self-contained trained model: :func:`load_model` rebuilds it from its checkpoint alone, and
:meth:`SavedModel.predict` normalises, checks the bands and predicts arrays or GeoTIFFs.

What a checkpoint holds beside the weights (written by training, :func:`hierars.training.run_metadata`, read
here; :func:`model_metadata` builds it)::

    "tree"            the whole tree definition (Hierarchy.to_dict(): levels, names, label values, colours)
    "bands"           {"names": [C] or None (unknown), "indexes": 1-based source bands read or None, "nodata"}
    "normalisation"   {"mean": [C], "std": [C]} as applied in training ((x - mean) / std), or None values
    "model_spec"      hierars.models.build_model's arguments (arch, encoder, in_channels, head, fusion, ...)
    "data"            what it was trained on (source, tile size, sample counts), for the model card
    "hierars_version" the package version that wrote it

The training settings (``"config"``) and metrics stay where :func:`hierars.training.fit` puts them. Loading uses
``torch.load(weights_only=True)`` (tensors and plain Python only). A checkpoint without these keys (written
before they existed) is refused with an error naming the file and the missing keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError

from hierars.granularity import summarise_probabilities
from hierars.hierarchy import Hierarchy
from hierars.models import build_model
from hierars.prediction import SlidingWindowPredictor

__all__ = ["SavedModel", "Prediction", "load_model", "model_metadata", "METADATA_KEYS"]

#: what each metadata key means, for the error on an old checkpoint
METADATA_KEYS = {"tree": "the tree definition", "bands": "the band names and order",
                 "normalisation": "the normalisation statistics", "model_spec": "the architecture",
                 "hierars_version": "the package version"}
_SPEC_KEYS = ("arch", "encoder", "in_channels", "head", "fusion", "decoder_channels", "dropout", "upsample_logits")


def model_metadata(hierarchy: Hierarchy, model_spec: Mapping[str, Any] | None, *, band_names: Sequence[str] | None,
                   mean: Sequence[float] | None, std: Sequence[float] | None, band_indexes: Sequence[int] | None = None,
                   nodata: float | None = None, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint keys that make a model self-contained (see the module docstring).

    ``model_spec`` None marks a model that :func:`hierars.models.build_model` cannot rebuild (e.g. a TransLU
    variant); :func:`load_model` then refuses it with that reason.
    """
    from hierars import __version__

    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    n = None if model_spec is None else int(model_spec["in_channels"])
    for what, seq in (("band names", band_names), ("means", mean), ("stds", std)):
        if seq is not None and n is not None and len(seq) != n:
            raise ValueError(f"{len(seq)} {what} for a model with {n} input bands")

    def as_floats(v: Sequence[float] | None) -> list[float] | None:
        return None if v is None else [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]

    return {
        "tree": hierarchy.to_dict(),
        "bands": {"names": None if band_names is None else [str(b) for b in band_names],
                  "indexes": None if band_indexes is None else [int(b) for b in band_indexes],
                  "nodata": None if nodata is None else float(nodata)},
        "normalisation": {"mean": as_floats(mean), "std": as_floats(std)},
        "model_spec": None if model_spec is None else {k: model_spec[k] for k in _SPEC_KEYS},
        "data": dict(data or {}),
        "hierars_version": __version__,
    }


@dataclass
class Prediction:
    """What :meth:`SavedModel.predict` returns (``L`` levels, image ``H×W``).

    Attributes:
        levels: int64 ``L×H×W`` per-level class ids (decoded by ``mode``; JSPS by default, then equal to the
            path's classes); ``ignore_index`` where the input is no data.
        path: int64 ``H×W`` index of the JSPS path (= its leaf, a row of ``hierarchy.paths``); -1 = no data.
        confidence: float32 ``L×H×W``, probability of each level's class under the path distribution
            (:mod:`hierars.granularity`); NaN = no data.
        granularity: int64 ``H×W`` node ids of the deepest sure level (:func:`hierars.granularity.node_ids`),
            or None without a threshold.
        hierarchy: the model's tree. crs, transform: the input raster's (None for arrays).
    """

    levels: np.ndarray
    path: np.ndarray
    confidence: np.ndarray
    granularity: np.ndarray | None
    hierarchy: Hierarchy
    crs: Any = None
    transform: Any = None
    band_indexes: list[int] = field(default_factory=list)


class SavedModel:
    """A trained model with its tree, bands and normalisation (:func:`load_model`).

    Attributes:
        model: the rebuilt ``nn.Module`` (eval mode). hierarchy: its tree. band_names: ``[C]`` or None.
        band_indexes: 1-based bands of the training images it read, or None (all). nodata: value taken as no data
        for rasters that declare none. mean, std: ``[C]`` normalisation (None: raw values). spec: build_model
        arguments. metadata: every stored key; config: the training settings; metrics: the final metrics.
    """

    def __init__(self, path: Path, state: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        missing = [k for k in METADATA_KEYS if k not in state]
        if missing:
            what = ", ".join(f"{METADATA_KEYS[k]} ({k!r})" for k in missing)
            raise ValueError(f"{path}: this checkpoint lacks {what}; it was written before checkpoints carried "
                             "them (re-train it with this version of hierars)")
        if state["model_spec"] is None:
            raise ValueError(f"{path}: the model was built by a custom builder (e.g. a TransLU variant), which "
                             "hierars.models.build_model cannot rebuild; load it the way it was built")
        self.path = path
        tree = dict(state["tree"])
        try:
            self.hierarchy = Hierarchy(tree["tree"], label_values=tree.get("label_values"),
                                       ignore_values=tree.get("ignore_values", ()),
                                       ignore_index=tree.get("ignore_index", 255), name=tree.get("name", "hierarchy"),
                                       colors=tree.get("colors"))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: the stored tree is not valid: {e}") from None
        self.spec = dict(state["model_spec"])
        self.in_channels = int(self.spec["in_channels"])
        bands = dict(state["bands"])
        self.band_names = None if bands.get("names") is None else list(bands["names"])
        self.band_indexes = None if bands.get("indexes") is None else [int(b) for b in bands["indexes"]]
        self.nodata = bands.get("nodata")
        norm = dict(state["normalisation"])
        self.mean, self.std = norm.get("mean"), norm.get("std")
        self.metadata = {k: state[k] for k in (*METADATA_KEYS, "data") if k in state}
        self.config = dict(state.get("config") or {})
        self.metrics = dict(state.get("metrics") or {})
        self.model = build_model(hierarchy=self.hierarchy, pretrained=None, **self.spec)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(f"{path}: the weights do not fit the stored architecture {self.spec}: "
                             f"{str(e).splitlines()[0]}") from None
        self.model.to(device).eval()
        self.device = torch.device(device)

    def __repr__(self) -> str:
        names = self.band_names or f"{self.in_channels} unnamed"
        return (f"SavedModel({self.path.name}: {self.spec['arch']} {self.spec['encoder']} {self.spec['head']}, "
                f"tree {self.hierarchy.name} {self.hierarchy.num_classes}, bands {names})")

    # ------------------------------------------------------------------------------------------ bands
    def _describe(self) -> str:
        return f"{self.in_channels} bands {self.band_names}" if self.band_names else f"{self.in_channels} bands"

    def select_bands(self, count: int, descriptions: Sequence[str | None] = (), where: str = "image") -> list[int]:
        """The 1-based bands of an image to feed the model, in the model's order.

        Named image bands (all descriptions set) are matched by name (case-insensitive; extra bands are skipped);
        unnamed ones must be exactly the model's count, or a superset that the training's ``band_indexes`` select.

        Raises:
            ValueError: the bands do not match; names ``where``, the expected and the found bands.
        """
        names = [str(d).strip() for d in descriptions] if descriptions and all(descriptions) else None
        found = f"{count} bands {names}" if names else f"{count} unnamed bands"
        if self.band_names and names:
            lower = [n.lower() for n in names]
            if all(b.lower() in lower for b in self.band_names):
                return [lower.index(b.lower()) + 1 for b in self.band_names]
            raise ValueError(f"{where}: band names do not match the model: expected {self._describe()}, "
                             f"found {found}")
        if count == self.in_channels:
            return list(range(1, count + 1))
        if self.band_indexes and count >= max(self.band_indexes):
            return list(self.band_indexes)
        raise ValueError(f"{where}: wrong number of bands: expected {self._describe()}, found {found}")

    # ------------------------------------------------------------------------------------- prediction
    def predictor(self, window: int = 512, overlap: int = 64, batch_size: int = 4, mode: str = "jsps",
                  progress: bool = False) -> SlidingWindowPredictor:
        """A :class:`hierars.prediction.SlidingWindowPredictor` with this model's normalisation."""
        norm = None if self.mean is None else (self.mean, self.std)
        return SlidingWindowPredictor(self.model, self.hierarchy, window, overlap, batch_size, mode, norm, self.device,
                                      progress)

    def predict(self, image: np.ndarray | torch.Tensor | str | os.PathLike, *, window: int = 512, overlap: int = 64,
                batch_size: int = 4, mode: str = "jsps", granularity: float | None = None, nodata: float | None = None,
                bands: Sequence[int] | None = None, band_names: Sequence[str] | None = None,
                progress: bool = False) -> Prediction:
        """Per-level maps, JSPS path, per-level confidence (and a granularity map) of one image.

        Args:
            image: raw (un-normalised) ``C×H×W`` array / tensor, or a raster path (read window by window).
            window, overlap, batch_size, mode, progress: as :class:`hierars.prediction.SlidingWindowPredictor`.
            granularity: threshold ``T`` of the confidence-aware granularity map (None: none).
            nodata: pixels whose every band equals it are no data (default: the raster's, else the training's).
            bands: 1-based bands of a raster to use (skips the name check); band_names: an array's band names.

        Raises:
            ValueError: the image's bands do not match the model's (names the file, expected and found bands).
        """
        from hierars.data.raster_prediction import window_reader

        predictor = self.predictor(window, overlap, batch_size, mode, progress)
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image not found: {path}")
            try:
                src = rasterio.open(path)
            except RasterioError as e:
                raise ValueError(f"{path}: not a readable raster ({e})") from None
            with src:
                idx = self._bands_of(src, bands, path)
                read = window_reader(src, idx, self._nodata(src.nodata, nodata), path)
                return self._collect(predictor, read, src.height, src.width, mode, granularity,
                                     crs=src.crs, transform=src.transform, band_indexes=idx)
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if arr.ndim != 3:
            raise ValueError(f"image must be C×H×W, got shape {arr.shape}")
        idx = self.select_bands(arr.shape[0], band_names or (), "image array")
        arr = arr[[i - 1 for i in idx]].astype(np.float32)
        nd = self._nodata(None, nodata)

        def read(r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray | None]:
            tile = arr[:, r : r + h, c : c + w]
            return tile, (None if nd is None else np.all(tile == nd, axis=0))

        return self._collect(predictor, read, arr.shape[1], arr.shape[2], mode, granularity, band_indexes=idx)

    def _bands_of(self, src: rasterio.DatasetReader, bands: Sequence[int] | None, path: Path) -> list[int]:
        if bands is None:
            return self.select_bands(src.count, src.descriptions, str(path))
        idx = [int(b) for b in bands]
        if len(idx) != self.in_channels or min(idx) < 1 or max(idx) > src.count:
            raise ValueError(f"{path}: --bands / bands={idx} must be {self.in_channels} band numbers in 1..{src.count} "
                             f"(the model takes {self._describe()})")
        return idx

    def _nodata(self, declared: float | None, given: float | None) -> float | None:
        return given if given is not None else declared if declared is not None else self.nodata

    def _collect(self, predictor: SlidingWindowPredictor, read, height: int, width: int, mode: str,
                 granularity: float | None, **geo: Any) -> Prediction:
        h = self.hierarchy
        levels = np.empty((h.num_levels, height, width), dtype=np.int64)
        path = np.empty((height, width), dtype=np.int64)
        conf = np.empty((h.num_levels, height, width), dtype=np.float32)
        gran = None if granularity is None else np.empty((height, width), dtype=np.int64)
        for (r, c, hh, ww), labels, probs in predictor.stream(read, height, width, with_probs=True):
            out = summarise_probabilities(probs, labels, h, granularity, labels_are_jsps=mode == "jsps")
            sl = (slice(r, r + hh), slice(c, c + ww))
            levels[(slice(None), *sl)] = labels
            path[sl] = out["path"]
            conf[(slice(None), *sl)] = out["confidence"]
            if gran is not None:
                gran[sl] = out["granularity"]
        return Prediction(levels, path, conf, gran, h, **geo)

    def predict_raster(self, src_path: str | os.PathLike, dst_path: str | os.PathLike, *, window: int = 512,
                       overlap: int = 64, batch_size: int = 4, granularity: float | None = None,
                       confidence: bool = True, nodata: float | None = None, bands: Sequence[int] | None = None,
                       progress: bool = True):
        """Predict a GeoTIFF of any size into georeferenced, styled files (JSPS; see
        :func:`hierars.data.predict_raster` for what is written). Returns its :class:`RasterPrediction`."""
        from hierars.data.raster_prediction import predict_raster

        src_path = Path(src_path)
        if not src_path.is_file():
            raise FileNotFoundError(f"image not found: {src_path}")
        try:
            with rasterio.open(src_path) as src:
                idx, declared = self._bands_of(src, bands, src_path), src.nodata
        except RasterioError as e:
            raise ValueError(f"{src_path}: not a readable raster ({e})") from None
        norm = None if self.mean is None else (self.mean, self.std)
        return predict_raster(self.model, src_path, dst_path, self.hierarchy, window, overlap, batch_size, norm, "jsps",
                              self.device, idx, progress, confidence=confidence, granularity=granularity,
                              nodata=self._nodata(declared, nodata))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> SavedModel:
    """Load a trained model with everything it needs to predict (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a readable torch file, not a hierars checkpoint, or one without the self-contained
            metadata (the message names the file and what is missing).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip / unpickling errors of a damaged or foreign file
        raise ValueError(f"{path} is not a readable model checkpoint (truncated, or not written by torch.save): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(state, Mapping) or "model" not in state:
        raise ValueError(f"{path} is not a hierars checkpoint (no 'model' weights)")
    return SavedModel(path, state, device)
