"""Data: the synthetic MM-5B-like benchmark, GeoTIFF-folder datasets with real-data adapters,
the prepare stage (splits + normalisation statistics) and joint image/mask augmentation.

Typical use::

    from hierars.data import PrepareConfig, prepare, build_dataset
    summary = prepare(PrepareConfig.from_params(params), "data/processed")
    train = build_dataset("data/processed", "train", "mm5b", source="s2")
    gid = build_dataset("../shared/data/gid15", "val", source="gid15")   # raw folder, read directly
"""

from hierars.data.geotiff import (
    GeoTiffDataset,
    RasterItem,
    agnet_items,
    dlrsd_items,
    folder_items,
    gid15_items,
    mm5b_items,
    resample_label,
    tile_windows,
    whdld_items,
    write_geotiff,
)
from hierars.data.prepare import (
    DATASETS,
    DomainConfig,
    PrepareConfig,
    RetrievalConfig,
    SyntheticConfig,
    build_dataset,
    load_hierarchy,
    prepare,
    preview_rows,
    read_retrieval_index,
)
from hierars.data.raster_prediction import RasterPrediction, predict_raster
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
    "RetrievalConfig",
    "SegAugment",
    "SyntheticConfig",
    "agnet_items",
    "band_stats",
    "build_dataset",
    "dlrsd_items",
    "folder_items",
    "gid15_items",
    "load_hierarchy",
    "mm5b_items",
    "prepare",
    "preview_rows",
    "read_retrieval_index",
    "resample_label",
    "tile_windows",
    "whdld_items",
    "write_geotiff",
]
