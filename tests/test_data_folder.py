"""The folder source of the prepare stage: pairing, value mapping, PNG labels, the three split kinds, and one
test per input error (each error names the file(s) at fault)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from folder_data import LEAVES, PNG_VALUES, make_folder
from pydantic import ValidationError
from rasterio.transform import from_origin

from hierars.data import PrepareConfig, band_stats, build_dataset, prepare, write_geotiff
from hierars.data.config import FolderConfig, FolderSplit
from hierars.data.folder import check_pair, convert_label, folder_pairs, label_lookup, split_folder
from hierars.data.rasters import RasterItem
from hierars.hierarchy import Hierarchy

WHDLD = Hierarchy.builtin("whdld")


def _cfg(root: Path, **folder) -> PrepareConfig:
    return PrepareConfig(source="folder", root=str(root), hierarchy="whdld",
                         folder={"ignore": [0], "tile_size": 32} | folder)  # fmt: skip


def _png(root: Path, **folder) -> PrepareConfig:
    return _cfg(root, labels="label/*.png", label_suffix="_gt.png", mapping=PNG_VALUES, **folder)


def _read(p: Path) -> np.ndarray:
    with rasterio.open(p) as ds:
        return ds.read(1)


@pytest.fixture()
def tif_root(tmp_path: Path) -> Path:
    make_folder(tmp_path / "a", 2, 2)
    return tmp_path / "a"


@pytest.fixture()
def png_root(tmp_path: Path) -> Path:
    make_folder(tmp_path / "b", 2, 2, png=True)
    return tmp_path / "b"


# ---------------------------------------------------------------------------------------------- mapping, PNG
def test_geotiff_labels_use_the_trees_values_and_become_leaf_indices(tif_root, tmp_path):
    summary = prepare(_cfg(tif_root), tmp_path / "out")
    raw_all = np.concatenate([_read(f).ravel() for f in (tif_root / "label").glob("*.tif")])
    counts = summary["class_pixels"]["folder"]  # labelled pixels per leaf and split (the domains figure)
    for leaf in WHDLD.names[-1]:
        assert counts["train"][leaf] + counts["val"][leaf] == int((raw_all == LEAVES.index(leaf) + 1).sum())
    for f in sorted((tif_root / "label").glob("*.tif")):
        raw, got = _read(f), _read(tmp_path / "out" / "folder" / "label" / f.name)
        assert 0 in raw and len(np.unique(raw)) >= 4
        for v in np.unique(raw).tolist():
            want = 255 if v == 0 else WHDLD.names[-1].index(LEAVES[v - 1])
            assert (got[raw == v] == want).all(), (f, v)


def test_png_labels_with_value_mapping_train_ready(png_root, tmp_path):
    out = tmp_path / "out"
    prepare(_png(png_root), out)
    lab = _read(png_root / "label" / "t_0_1_gt.png")
    got = _read(out / "folder" / "label" / "t_0_1.tif")
    for v, leaf in PNG_VALUES.items():
        assert (got[lab == v] == WHDLD.names[-1].index(leaf)).all()
    assert (got[lab == 0] == 255).all()
    with rasterio.open(out / "folder" / "label" / "t_0_1.tif") as ls, \
            rasterio.open(png_root / "image" / "t_0_1.tif") as im:  # fmt: skip
        assert ls.crs == im.crs and ls.transform == im.transform  # the PNG label now sits on the image grid
    ds = build_dataset(out, "train", source="folder")
    s = ds[0]
    assert s["mask"].shape == (2, 32, 32) and ds.hierarchy.names == WHDLD.names
    assert set(s["mask"][-1].unique().tolist()) <= set(range(6)) | {255}


def test_label_conversion_in_row_strips_equals_one_pass(png_root, tmp_path):
    fc = _png(png_root).folder
    it = folder_pairs(png_root, fc)[0]
    lut, ignore = label_lookup(WHDLD, fc)
    hdr = check_pair(it, fc)
    one = convert_label(it, hdr, lut, ignore, tmp_path / "one.tif", {}, rows=4096)
    strips = convert_label(it, hdr, lut, ignore, tmp_path / "strips.tif", {}, rows=7)  # 32 rows: 5 strips
    assert np.array_equal(_read(one), _read(strips)) and (_read(one) != 255).any()


def test_band_stats_in_row_strips_and_params_nodata(tif_root):
    items = folder_pairs(tif_root, FolderConfig(ignore=[0]))
    one, strips = band_stats(items), band_stats(items, max_values=4 * 32 * 5)  # 5-row strips
    for k in ("mean", "std", "min", "max", "pixels"):
        assert np.allclose(one[k], strips[k], rtol=1e-12), k
    low = min(one["min"][3], one["min"][2])  # a value bands 4 or 3 hold
    masked = band_stats(items, nodata=low, indexes=[4, 3])  # images declare no nodata: the params value applies
    assert masked["pixels"] < one["pixels"] and len(masked["mean"]) == 2


def test_mapping_by_leaf_name_equals_mapping_by_index(png_root, tmp_path):
    by_index = {v: WHDLD.names[-1].index(leaf) for v, leaf in PNG_VALUES.items()}
    prepare(_png(png_root), tmp_path / "names")
    prepare(_cfg(png_root, labels="label/*.png", label_suffix="_gt.png", mapping=by_index), tmp_path / "idx")
    for f in (tmp_path / "names" / "folder" / "label").glob("*.tif"):
        assert np.array_equal(_read(f), _read(tmp_path / "idx" / "folder" / "label" / f.name))


def test_band_selection_names_and_stats_in_manifest(tif_root, tmp_path):
    out = tmp_path / "out"
    prepare(_cfg(tif_root, bands=[4, 3, 2], band_names=["nir", "red", "green"]), out)
    spec = json.loads((out / "manifest.json").read_text())["datasets"]["folder"]
    stats = json.loads((out / "stats.json").read_text())["folder"]
    assert spec["bands"] == ["nir", "red", "green"] and spec["band_indexes"] == [4, 3, 2]
    assert spec["normalisation"]["mean"] == stats["mean"] and len(stats["mean"]) == 3
    ds = build_dataset(out, "train", source="folder", normalize=False)
    assert ds.band_names == ["nir", "red", "green"] and ds[0]["image"].shape[0] == 3
    with rasterio.open(ds.items[0].image) as src:
        assert np.array_equal(ds[0]["image"][0].numpy(), src.read(4).astype(np.float32))
    # without band_names, the images' band descriptions name the bands
    prepare(_cfg(tif_root, bands=[1, 4]), tmp_path / "o2")
    assert json.loads((tmp_path / "o2" / "manifest.json").read_text())["datasets"]["folder"]["bands"] == ["blue", "nir"]


def test_png_label_with_a_world_file_is_checked_by_its_transform(png_root, tmp_path):
    with rasterio.open(png_root / "image" / "t_0_1.tif") as im:
        t = im.transform
    world = png_root / "label" / "t_0_1_gt.pgw"  # world file: a, d, b, e, x and y of the first pixel's centre
    world.write_text("\n".join(str(v) for v in (t.a, t.d, t.b, t.e, t.c + t.a / 2, t.f + t.e / 2)) + "\n")
    prepare(_png(png_root), tmp_path / "ok")  # same grid, no CRS: accepted
    world.write_text("\n".join(str(v) for v in (t.a, t.d, t.b, t.e, t.c + 1000, t.f)) + "\n")
    with pytest.raises(ValueError, match=r"transform mismatch: image \S*t_0_1\.tif.*label \S*t_0_1_gt\.png"):
        prepare(_png(png_root), tmp_path / "bad")


def test_non_strict_turns_unknown_values_into_ignore(png_root, tmp_path):
    cfg = _cfg(png_root, labels="label/*.png", label_suffix="_gt.png", mapping={10: "building"})
    prepare(cfg.model_copy(update={"strict": False}), tmp_path / "out")
    got = _read(tmp_path / "out" / "folder" / "label" / "t_0_0.tif")
    lab = _read(png_root / "label" / "t_0_0_gt.png")
    assert (got[lab == 20] == 255).all() and (got[lab == 10] == WHDLD.names[-1].index("building")).all()


# ---------------------------------------------------------------------------------------------- splits
def _grid_items(tmp_path: Path, n: int = 6, size: int = 8) -> tuple[list[RasterItem], list[dict]]:
    make_folder(tmp_path / "g", n, n, size=size)
    fc = FolderConfig(ignore=[0])
    items = folder_pairs(tmp_path / "g", fc)
    headers = []
    for it in items:
        with rasterio.open(it.image) as ds:
            headers.append({"transform": ds.transform, "width": ds.width, "height": ds.height})
    return items, headers


def test_random_split_is_seeded_and_keeps_the_fraction(tmp_path):
    items, _ = _grid_items(tmp_path, 4)
    a = split_folder(items, FolderSplit(val_fraction=0.25), 3, tmp_path / "g")
    b = split_folder(items, FolderSplit(val_fraction=0.25), 3, tmp_path / "g")
    c = split_folder(items, FolderSplit(val_fraction=0.25), 4, tmp_path / "g")
    assert [it.image for it in a["val"]] == [it.image for it in b["val"]] != [it.image for it in c["val"]]
    assert len(a["val"]) == 4 and len(a["train"]) == 12
    assert not {it.image for it in a["val"]} & {it.image for it in a["train"]}


def test_file_list_split(tmp_path):
    items, _ = _grid_items(tmp_path, 2)
    root = tmp_path / "g"
    (root / "train.txt").write_text("# train tiles\nimage/t_0_0.tif\nt_0_1.tif\n\n")
    (root / "val.txt").write_text("t_1_1\n")  # a key works too
    sp = split_folder(items, FolderSplit(kind="files", train_list="train.txt", val_list="val.txt"), 0, root)
    assert [it.image.name for it in sp["train"]] == ["t_0_0.tif", "t_0_1.tif"]
    assert [it.image.name for it in sp["val"]] == ["t_1_1.tif"]  # t_1_0 is in neither list: left out


def test_block_split_never_shares_a_block_between_train_and_val(tmp_path):
    items, headers = _grid_items(tmp_path, 6, size=8)  # 6 x 6 tiles of 80 m
    for units, size in (("map", 160.0), ("pixels", 16)):  # blocks of 2 x 2 tiles
        sp = split_folder(items, FolderSplit(kind="blocks", block_size=size, block_units=units), 0, tmp_path / "g", headers)
        train_blocks = {tuple(it.extra["block"]) for it in sp["train"]}
        val_blocks = {tuple(it.extra["block"]) for it in sp["val"]}
        assert sp["train"] and sp["val"] and not train_blocks & val_blocks
        assert len(train_blocks | val_blocks) == 9  # 36 tiles in 9 blocks: every block holds 4 tiles
        for it in sp["val"]:  # all four tiles of a val block are in val
            assert sum(tuple(x.extra["block"]) == tuple(it.extra["block"]) for x in sp["val"]) == 4
    sp = split_folder(items, FolderSplit(kind="blocks", block_size=80.0, buffer=1, val_fraction=0.1), 0,
                      tmp_path / "g", headers)  # fmt: skip
    assert len(sp["val"]) == 4 and 0 < len(sp["train"]) <= 36 - 4 - 8  # one-tile blocks; neighbours dropped
    for v in sp["val"]:  # buffer 1: no train tile in a block next to a val block
        for t in sp["train"]:
            assert max(abs(v.extra["block"][0] - t.extra["block"][0]), abs(v.extra["block"][1] - t.extra["block"][1])) >= 2


def test_error_block_split_needs_georeferenced_images(tmp_path):
    items, headers = _grid_items(tmp_path, 2)
    headers[1] = headers[1] | {"transform": rasterio.Affine.identity()}
    with pytest.raises(ValueError, match=r"image \S*t_0_1\.tif has no georeferencing"):
        split_folder(items, FolderSplit(kind="blocks", block_size=10.0), 0, tmp_path / "g", headers)


# ---------------------------------------------------------------------------------------------- errors
def test_error_size_mismatch_names_both_files(tif_root, tmp_path):
    lab = tif_root / "label" / "t_0_1.tif"
    write_geotiff(lab, np.ones((30, 32), np.uint8), from_origin(500320, 5000000, 10, 10), "EPSG:32633")
    with pytest.raises(ValueError, match=r"size mismatch.*t_0_1\.tif.*label.*t_0_1\.tif"):
        prepare(_cfg(tif_root), tmp_path / "out")


def test_error_transform_mismatch_names_both_files(tif_root, tmp_path):
    write_geotiff(tif_root / "label" / "t_1_0.tif", np.ones((32, 32), np.uint8),
                  from_origin(0, 0, 10, 10), "EPSG:32633")  # fmt: skip
    with pytest.raises(ValueError, match=r"transform mismatch: image \S*image/t_1_0\.tif.*label \S*label/t_1_0\.tif"):
        prepare(_cfg(tif_root), tmp_path / "out")


def test_error_crs_mismatch_names_both_files(tif_root, tmp_path):
    with rasterio.open(tif_root / "image" / "t_1_1.tif") as im:
        tr = im.transform
    write_geotiff(tif_root / "label" / "t_1_1.tif", np.ones((32, 32), np.uint8), tr, "EPSG:32634")
    with pytest.raises(ValueError, match=r"CRS mismatch: image \S*image/t_1_1\.tif.*label \S*label/t_1_1\.tif"):
        prepare(_cfg(tif_root), tmp_path / "out")


def test_error_png_label_size_mismatch_names_both_files(png_root, tmp_path):
    with rasterio.open(png_root / "label" / "t_0_0_gt.png", "w", driver="PNG", width=31, height=32, count=1,
                       dtype="uint8") as dst:  # fmt: skip
        dst.write(np.full((1, 32, 31), 10, np.uint8))
    with pytest.raises(ValueError, match=r"size mismatch: image \S*t_0_0\.tif.*label \S*t_0_0_gt\.png"):
        prepare(_png(png_root), tmp_path / "out")


def test_error_label_values_outside_the_tree_name_file_and_values(tif_root, tmp_path):
    lab = _read(tif_root / "label" / "t_1_1.tif")
    lab[3, 5], lab[4, 4] = 9, 42
    with rasterio.open(tif_root / "image" / "t_1_1.tif") as im:
        write_geotiff(tif_root / "label" / "t_1_1.tif", lab, im.transform, im.crs)
    with pytest.raises(ValueError, match=r"label \S*t_1_1\.tif: values \[9, 42\] are neither mapped"):
        prepare(_cfg(tif_root), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing for training to trip over later


def test_error_mapped_value_missing_from_mapping(png_root, tmp_path):
    mapping = {k: v for k, v in PNG_VALUES.items() if k != 60}
    with pytest.raises(ValueError, match=r"t_\d_\d_gt\.png: values \[60\]"):
        prepare(_cfg(png_root, labels="label/*.png", label_suffix="_gt.png", mapping=mapping), tmp_path / "out")


def test_error_mapping_to_an_unknown_leaf(png_root, tmp_path):
    with pytest.raises(ValueError, match=r"prepare.folder.mapping\[10\] = 'forest' is not a leaf"):
        prepare(_cfg(png_root, labels="label/*.png", label_suffix="_gt.png", mapping={10: "forest"}), tmp_path / "o")


def test_error_missing_label_names_the_image(tif_root, tmp_path):
    (tif_root / "label" / "t_0_1.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"no label for image \S*image/t_0_1\.tif"):
        prepare(_cfg(tif_root), tmp_path / "out")


def test_error_no_images_names_the_glob(tmp_path):
    (tmp_path / "e" / "image").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no images matching prepare.folder.images='image/\*.tif'"):
        prepare(_cfg(tmp_path / "e"), tmp_path / "out")


def test_error_empty_image_file(tif_root, tmp_path):
    (tif_root / "image" / "t_1_0.tif").write_bytes(b"")
    with pytest.raises(ValueError, match=r"image \S*t_1_0\.tif is empty \(0 bytes\)"):
        prepare(_cfg(tif_root), tmp_path / "out")


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def test_error_truncated_image_names_the_file(tmp_path):
    make_folder(tmp_path / "t", 1, 2, size=256)  # large enough that half the file cuts pixel data
    _truncate(tmp_path / "t" / "image" / "t_0_1.tif")
    with pytest.raises(ValueError, match=r"t_0_1\.tif") as e:
        prepare(_cfg(tmp_path / "t"), tmp_path / "out")
    assert type(e.value) is ValueError  # not a bare RasterioIOError


def test_error_truncated_label_names_the_file(tmp_path):
    make_folder(tmp_path / "t", 1, 2, size=256)
    _truncate(tmp_path / "t" / "label" / "t_0_0.tif")
    with pytest.raises(ValueError, match=r"label\S*t_0_0\.tif") as e:
        prepare(_cfg(tmp_path / "t"), tmp_path / "out")
    assert type(e.value) is ValueError


def test_error_band_selection_beyond_the_image(tif_root, tmp_path):
    with pytest.raises(ValueError, match=r"image \S*t_0_0\.tif has 4 bands; prepare.folder.bands asks for \[5\]"):
        prepare(_cfg(tif_root, bands=[5]), tmp_path / "out")


def test_error_file_list_names_an_unknown_image(tif_root, tmp_path):
    (tif_root / "train.txt").write_text("t_0_0.tif\n")
    (tif_root / "val.txt").write_text("t_0_1.tif\nt_9_9.tif\n")
    with pytest.raises(ValueError, match=r"val.txt:2: 't_9_9.tif' names no image"):
        prepare(_cfg(tif_root, split={"kind": "files", "train_list": "train.txt", "val_list": "val.txt"}), tmp_path / "o")


def test_error_unknown_params_key():
    with pytest.raises(ValidationError, match=r"folder\.labls"):
        PrepareConfig(source="folder", root="x", hierarchy="whdld", folder={"labls": "label/*.png"})
    with pytest.raises(ValidationError, match=r"block_size / buffer are used by kind 'blocks' only"):
        FolderSplit(kind="random", block_size=100)
    with pytest.raises(ValidationError, match=r"kind 'files' needs train_list and val_list"):
        FolderSplit(kind="files", train_list="a.txt")
    with pytest.raises(ValidationError, match=r"1-based band numbers"):
        FolderConfig(bands=[0, 1])


def test_jpeg_labels_warn(tif_root, tmp_path):
    for f in (tif_root / "label").glob("*.tif"):
        with rasterio.open(f) as src, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(f.with_suffix(".jpg"), "w", driver="JPEG", width=src.width, height=src.height,
                               count=1, dtype="uint8", quality=100) as dst:  # fmt: skip
                dst.write(src.read(1), 1)
        f.unlink()
    with pytest.warns(UserWarning, match=r"label \S*\.jpg is a JPEG: lossy"):
        prepare(_cfg(tif_root, labels="label/*.jpg").model_copy(update={"strict": False}), tmp_path / "out")
