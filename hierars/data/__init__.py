"""Data: the synthetic MM-5B-like benchmark, GeoTIFF-folder datasets with real-data adapters,
the prepare stage (splits + normalisation statistics) and joint image/mask augmentation.

The data layer imports the core only (never the project layer, training or plotting); paths it is
given are used as given. Modules: :mod:`~hierars.data.rasters` (raster IO),
:mod:`~hierars.data.adapters` (dataset folder layouts), :mod:`~hierars.data.geotiff` (the tiled
dataset), :mod:`~hierars.data.synthetic` (the generator), :mod:`~hierars.data.config`,
:mod:`~hierars.data.generate`, :mod:`~hierars.data.prepare` (the prepare stage), :mod:`~hierars.data.folder`
(its ``folder`` source: any GeoTIFF images with GeoTIFF / PNG / JPEG labels),
:mod:`~hierars.data.datasets` (reading prepared or raw data), :mod:`~hierars.data.labels`,
:mod:`~hierars.data.manifest`, :mod:`~hierars.data.stats`, :mod:`~hierars.data.transforms`,
:mod:`~hierars.data.raster_prediction`, :mod:`~hierars.data.saved_model` (a trained model that predicts on its own).

Typical use::

    from hierars.data import PrepareConfig, prepare, build_dataset
    summary = prepare(PrepareConfig.from_params(params), "data/processed")
    train = build_dataset("data/processed", "train", "mm5b", source="s2")
    gid = build_dataset("../shared/data/gid15", "val", source="gid15")   # raw folder, read directly
"""

from hierars.data.adapters import (
    WHDLD_COLORS,
    agnet_items,
    dlrsd_items,
    folder_items,
    gid15_items,
    mm5b_items,
    whdld_items,
)
from hierars.data.config import DomainConfig, PrepareConfig, RetrievalConfig, SyntheticConfig
from hierars.data.datasets import DATASETS, build_dataset, read_retrieval_index
from hierars.data.geotiff import GeoTiffDataset
from hierars.data.labels import load_hierarchy
from hierars.data.prepare import prepare
from hierars.data.raster_prediction import RasterPrediction, predict_raster
from hierars.data.rasters import RasterItem, read_raster, resample_label, tile_windows, write_geotiff
from hierars.data.saved_model import Prediction, SavedModel, load_model
from hierars.data.stats import band_stats
from hierars.data.transforms import SegAugment

__all__ = [
    "DATASETS",
    "DomainConfig",
    "GeoTiffDataset",
    "PrepareConfig",
    "RasterItem",
    "RasterPrediction",
    "predict_raster",
    "Prediction",
    "SavedModel",
    "load_model",
    "RetrievalConfig",
    "SegAugment",
    "SyntheticConfig",
    "WHDLD_COLORS",
    "agnet_items",
    "band_stats",
    "build_dataset",
    "dlrsd_items",
    "folder_items",
    "gid15_items",
    "load_hierarchy",
    "mm5b_items",
    "prepare",
    "read_raster",
    "read_retrieval_index",
    "resample_label",
    "tile_windows",
    "whdld_items",
    "write_geotiff",
]
