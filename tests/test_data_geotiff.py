"""GeoTIFF-folder dataset: tiling, nodata, and clear errors naming the file on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from hierars.data import GeoTiffDataset, RasterItem, SegAugment, folder_items, tile_windows, write_geotiff
from hierars.hierarchy import Hierarchy

TREE = Hierarchy(
    {"veg": {"crop": ["paddy", "dry"], "tree": ["forest"]}, "water": {"water": ["river", "lake"]}},
    label_values={"paddy": 1, "dry": 2, "forest": 3, "river": 4, "lake": 5},
    ignore_values=[0],
    name="toy",
)


def _pair(
    d, name="a", bands=3, shape=(40, 48), label_shape=None, img=None, lab=None, nodata=None, lab_nodata=None
):
    img = np.random.default_rng(0).integers(0, 200, (bands, *shape)).astype(np.uint16) if img is None else img
    lab = (
        np.random.default_rng(1).integers(1, 6, label_shape or shape).astype(np.uint8) if lab is None else lab
    )
    tr = from_origin(1000, 2000, 2, 2)
    ip = write_geotiff(d / "image" / f"{name}.tif", img, tr, "EPSG:32650", nodata=nodata)
    lp = write_geotiff(d / "label" / f"{name}.tif", lab, tr, "EPSG:32650", nodata=lab_nodata)
    return ip, lp


def test_tile_windows_rules():
    assert len(tile_windows(225, 224, 224, "crop")) == 1  # GID-15's 225-px images: one 224 crop
    assert len(tile_windows(320, 320, 128, "pad")) == 9
    w = tile_windows(320, 320, 128, "cover")
    assert len(w) == 9 and max(x.col_off for x in w) == 192
    assert len(tile_windows(100, 100, 128, "crop")) == 1
    with pytest.raises(ValueError, match="fit"):
        tile_windows(10, 10, 4, "bogus")


def test_samples_tiles_meta_and_padding(tmp_path):
    _pair(tmp_path, shape=(40, 48))
    ds = GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE, tile_size=32, fit="pad")
    assert len(ds) == 4
    s = ds[3]  # bottom-right tile: 8 x 16 valid pixels, the rest padded
    assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
    assert s["mask"].shape == (3, 32, 32) and s["mask"].dtype == torch.int64
    assert (s["mask"][:, 8:, :] == 255).all() and (s["mask"][:, :, 16:] == 255).all()
    assert (s["mask"][:, :8, :16] != 255).all()
    tr = s["meta"]["transform"].tolist()
    assert tr[2] == 1000 + 2 * 32 and tr[5] == 2000 - 2 * 32  # window transform
    assert s["meta"]["crs"] == "EPSG:32650"
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 32, 32) and len(batch["meta"]["path"]) == 2


def test_labels_encoded_through_tree(tmp_path):
    lab = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    _pair(tmp_path, shape=(2, 3), lab=lab)
    s = GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)[0]
    assert s["mask"][:, 0, 0].tolist() == [255, 255, 255]
    assert s["mask"][:, 0, 1].tolist() == [0, 0, 0]  # paddy: veg / crop / paddy
    assert s["mask"][:, 1, 2].tolist() == [1, 2, 4]  # lake: water / water / lake


def test_nodata_becomes_ignore_not_a_class(tmp_path):
    img = np.full((2, 4, 4), 50, np.int16)
    img[:, 0, 0] = -9999
    lab = np.full((4, 4), 1, np.uint8)
    lab[3, 3] = 77  # label nodata value: not in the tree, but declared nodata -> ignore, no error
    _pair(tmp_path, bands=2, shape=(4, 4), img=img, lab=lab, nodata=-9999, lab_nodata=77)
    s = GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE, mean=[50, 50], std=[1, 1])[
        0
    ]
    assert (s["mask"][:, 0, 0] == 255).all() and (s["mask"][:, 3, 3] == 255).all()
    assert (s["mask"][:, 1, 1] != 255).all()
    assert s["image"][:, 0, 0].tolist() == [0.0, 0.0]  # nodata pixels are neutral after normalisation


def test_missing_label_names_file(tmp_path):
    ip, lp = _pair(tmp_path)
    lp.unlink()
    with pytest.raises(FileNotFoundError, match=r"label raster missing for image .*a\.tif"):
        GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)


def test_band_count_mismatch_names_file(tmp_path):
    _pair(tmp_path, "a", bands=3)
    _pair(tmp_path, "b", bands=4)
    with pytest.raises(ValueError, match=r"b\.tif: has 4 bands, expected 3"):
        GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)


def test_shape_mismatch_names_both_files(tmp_path):
    _pair(tmp_path, shape=(40, 48), label_shape=(40, 40))
    with pytest.raises(
        ValueError, match=r"shape mismatch: image .*a\.tif is 40x48 but label .*a\.tif is 40x40"
    ):
        GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)


def test_corrupt_tiff_names_file(tmp_path):
    _pair(tmp_path)
    bad = tmp_path / "image" / "a.tif"
    bad.write_bytes(b"II*\x00" + b"\x13" * 64)
    with pytest.raises(ValueError, match=r"a\.tif: unreadable or corrupt raster"):
        GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)


def test_truncated_tiff_pixels_fail_on_read_naming_file(tmp_path):
    ip, _ = _pair(tmp_path, shape=(256, 256))
    data = ip.read_bytes()
    ip.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"a\.tif"):
        ds = GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)
        ds[0]


def test_label_values_outside_tree(tmp_path):
    lab = np.full((8, 8), 1, np.uint8)
    lab[0, :3] = 42
    _pair(tmp_path, shape=(8, 8), lab=lab)
    items = folder_items(tmp_path / "image", tmp_path / "label")
    with pytest.raises(ValueError, match=r"label/a\.tif: raw label values \[42\] are not in the tree 'toy'"):
        GeoTiffDataset(items, TREE)[0]
    s = GeoTiffDataset(items, TREE, strict=False)[0]
    assert (s["mask"][:, 0, :3] == 255).all() and (s["mask"][:, 1] != 255).all()


def test_nan_inf_pixels_name_file(tmp_path):
    img = np.ones((2, 8, 8), np.float32)
    img[1, 2, 5] = np.nan
    _pair(tmp_path, bands=2, shape=(8, 8), img=img)
    with pytest.raises(
        ValueError, match=r"image/a\.tif: 1 NaN/inf pixel values \(first at band 2, row 2, col 5\)"
    ):
        GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)[0]
    img[1, 2, 5] = np.inf
    _pair(tmp_path, "a", bands=2, shape=(8, 8), img=img)
    with pytest.raises(ValueError, match="NaN/inf"):
        GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)[0]


def test_nan_declared_as_nodata_is_ignore(tmp_path):
    img = np.ones((1, 4, 4), np.float32)
    img[0, 1, 1] = np.nan
    _pair(tmp_path, bands=1, shape=(4, 4), img=img, nodata=float("nan"))
    s = GeoTiffDataset(folder_items(tmp_path / "image", tmp_path / "label"), TREE)[0]
    assert (s["mask"][:, 1, 1] == 255).all() and torch.isfinite(s["image"]).all()


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images matching '\*\.tif' in .*image"):
        folder_items(tmp_path / "image", tmp_path / "label")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        folder_items(tmp_path / "nope", tmp_path / "label")
    with pytest.raises(ValueError, match="no rasters"):
        GeoTiffDataset([], TREE)


def test_no_crs_allowed(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    with rasterio.open(
        tmp_path / "image" / "x.tif", "w", driver="GTiff", height=8, width=8, count=1, dtype="uint8"
    ) as d:
        d.write(np.ones((1, 8, 8), np.uint8))
    with rasterio.open(
        tmp_path / "label" / "x.tif", "w", driver="GTiff", height=8, width=8, count=1, dtype="uint8"
    ) as d:
        d.write(np.full((1, 8, 8), 3, np.uint8))
    s = GeoTiffDataset([RasterItem(tmp_path / "image" / "x.tif", tmp_path / "label" / "x.tif")], TREE)[0]
    assert s["meta"]["crs"] == "" and (s["mask"][2] == 2).all()


def test_augmentation_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    mask = torch.randint(0, 5, (4, 1, 32, 32))
    mask[:, :, :4, :] = 255
    image = torch.cat([mask.float(), torch.randn(4, 2, 32, 32)], 1)
    aug = SegAugment(hflip=0.5, vflip=0.5, rot90=1.0)
    img2, m2 = aug(image, mask)
    assert img2.shape == image.shape and m2.dtype == torch.long
    assert torch.equal(img2[:, 0].round().long(), m2[:, 0])
    assert not torch.equal(m2, mask)
    blocks = torch.randint(0, 5, (4, 1, 4, 4)).repeat_interleave(8, 2).repeat_interleave(8, 3)
    image = torch.cat([blocks.float(), torch.randn(4, 2, 32, 32)], 1)
    crop = SegAugment(scale=(0.3, 0.6))
    img3, m3 = crop(image, blocks)
    ok = m3[:, 0] != 255
    assert set(m3.unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    # nearest-neighbour mask; the bilinear image agrees where the mask is locally constant
    assert (img3[:, 0][ok].round().long() == m3[:, 0][ok]).float().mean() > 0.8
    sample = aug({"image": image[0], "mask": mask[0], "meta": {"path": "x"}})
    assert sample["image"].shape == image[0].shape and sample["meta"]["path"] == "x"


def test_tile_cache_same_values_copies_and_budget(tmp_path):
    import pickle

    _pair(tmp_path, shape=(40, 48), nodata=0)
    items = folder_items(tmp_path / "image", tmp_path / "label")
    plain = GeoTiffDataset(items, TREE, tile_size=32, mean=[50, 50, 50], std=[9, 9, 9], cache_mb=0)
    cached = GeoTiffDataset(items, TREE, tile_size=32, mean=[50, 50, 50], std=[9, 9, 9])
    first = [cached[i] for i in range(len(cached))]
    assert cached._cached_bytes > 0 and plain._cached_bytes == 0
    first[0]["image"].fill_(1e6)  # a caller writing into a sample must not change the cache
    first[0]["mask"].fill_(0)
    for _ in range(2):
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    # the budget bounds what is kept: room for 1.5 tiles keeps one
    tile_bytes = cached._cached_bytes // len(cached)
    small = GeoTiffDataset(items, TREE, tile_size=32, cache_mb=1.5 * tile_bytes / 2**20)
    for i in range(len(small)):
        small[i]
    assert len(small._cache) == 1 and small._cached_bytes == tile_bytes
    assert pickle.loads(pickle.dumps(cached))._cache == {}  # a DataLoader worker's copy starts empty
    # the cache really serves the tiles: with the files gone, the cached dataset still reads, the plain one fails
    for f in (tmp_path / "image").glob("*.tif"):
        f.unlink()
    assert torch.equal(cached[1]["image"], first[1]["image"])
    with pytest.raises(FileNotFoundError, match="raster not found"):
        plain[1]
    with pytest.raises(ValueError, match="cache_mb"):
        GeoTiffDataset(items, TREE, cache_mb=-1)
