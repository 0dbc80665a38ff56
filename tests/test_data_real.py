"""Real data read in place (../shared/data): GID-15 and Ag-Net loaders, splits, prepare on real data."""

from __future__ import annotations

import json

import pytest
import torch

from hierars.data import PrepareConfig, agnet_items, build_dataset, gid15_items, prepare


@pytest.fixture(scope="module")
def gid(shared_data):
    return build_dataset(shared_data / "gid15", "all", source="gid15", normalize=False)


def test_gid15_yields_767_samples_3x224x224(gid):
    assert len(gid) == 767
    h = gid.hierarchy
    assert h.num_classes == (3, 5, 15)
    # the three odd-sized images (225 x 224 / 224 x 225) are cropped to their top-left 224 x 224
    odd = [i for i, (k, w) in enumerate(gid.index) if gid._header(gid.items[k])[:2] != (224, 224)]
    assert len(odd) == 3
    for i in [0, 400, 766, *odd]:
        s = gid[i]
        assert s["image"].shape == (3, 224, 224) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (3, 224, 224) and s["mask"].dtype == torch.int64
        pid = h.path_id(s["mask"])
        assert ((pid >= 0) | (s["mask"] == 255).all(0)).all()
        assert s["meta"]["scene"] in h.names[-1]  # GID-15 scene folders are named after classes


def test_gid15_undefined_is_ignore(gid):
    share = []
    for i in range(0, 767, 40):
        m = gid[i]["mask"]
        share.append((m[0] == 255).float().mean())
    assert 0.02 < float(torch.stack(share).mean()) < 0.5  # README: ~17.5 % undefined


def test_gid15_split_stratified_by_scene(shared_data):
    tr = build_dataset(shared_data / "gid15", "train", source="gid15", normalize=False)
    va = build_dataset(shared_data / "gid15", "val", source="gid15", normalize=False)
    assert len(tr) + len(va) == 767 and 170 < len(va) < 215
    assert {it.scene for it in va.items} == {it.scene for it in tr.items}
    assert not {it.image for it in tr.items} & {it.image for it in va.items}


@pytest.fixture(scope="module")
def agnet(shared_data):
    return {
        t: build_dataset(shared_data / "agnet", "all", t, source="agnet")
        for t in ("agnet_lclu", "agnet_crop")
    }


@pytest.mark.parametrize("tree,levels", [("agnet_lclu", (3, 6)), ("agnet_crop", (3, 6, 9))])
def test_agnet_7band_float_tiles_with_cdl_codes_mapped(agnet, tree, levels):
    ds = agnet[tree]
    assert len(ds) == 341
    h = ds.hierarchy
    assert h.num_classes == levels
    seen = set()
    for i in range(0, 341, 17):
        s = ds[i]
        assert s["image"].shape == (7, 128, 128) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (len(levels), 128, 128)
        assert abs(float(s["image"].mean())) < 3  # normalised
        pid = h.path_id(s["mask"])
        assert ((pid >= 0) | (s["mask"] == 255).all(0)).all()
        seen |= set(pid[pid >= 0].unique().tolist())
    names = {h.names[-1][k] for k in seen}
    if tree == "agnet_crop":
        assert {"corn", "soybean", "spring_wheat", "grassland"} <= names
    else:
        assert {"cropland", "grassland", "water"} <= names


def test_agnet_cdl_codes_map_to_leaves(shared_data, agnet):
    """A pixel of CDL 5 (soybeans) is cropland in the LCLU tree and soybean in the crop tree."""
    import rasterio

    it = next(i for i in agnet_items(shared_data / "agnet") if (rasterio.open(i.label).read(1) == 5).any())
    raw = torch.from_numpy(rasterio.open(it.label).read(1).astype("int64"))
    for tree, leaf in (("agnet_lclu", "cropland"), ("agnet_crop", "soybean")):
        ds = agnet[tree]
        k = [j for j, x in enumerate(ds.items) if x.image == it.image][0]
        m = ds[k]["mask"]
        assert (m[-1][raw == 5] == ds.hierarchy.names[-1].index(leaf)).all()


def test_agnet_split_is_spatial_by_rows(shared_data):
    tr = build_dataset(shared_data / "agnet", "train", source="agnet")
    va = build_dataset(shared_data / "agnet", "val", source="agnet")
    rows_tr = {int(it.scene.split("_")[0]) for it in tr.items}
    rows_va = {int(it.scene.split("_")[0]) for it in va.items}
    assert rows_va == {24, 25} and not rows_tr & rows_va
    assert len(tr) + len(va) == 341


def test_prepare_on_real_agnet_writes_splits_and_stats(shared_data, tmp_path):
    cfg = PrepareConfig(
        source="agnet", root=str(shared_data / "agnet"), val_rows=[16], buffer_rows=[17], seed=0
    )
    summary = prepare(cfg, tmp_path)
    assert summary["datasets"]["agnet"]["val"] == 34
    stats = json.loads((tmp_path / "stats.json").read_text())["agnet"]
    assert len(stats["mean"]) == 7 and all(s > 0 for s in stats["std"])
    splits = json.loads((tmp_path / "splits.json").read_text())["agnet"]
    assert not any("_17_" in d["image"] for d in splits["train"] + splits["val"])  # buffer row dropped
    ds = build_dataset(tmp_path, "train", "agnet_crop", source="agnet")
    assert ds[0]["image"].shape == (7, 128, 128)


def test_gid15_items_pair_every_image(shared_data):
    items = gid15_items(shared_data / "gid15")
    assert len(items) == 767 and all(it.label.exists() for it in items)
    assert len({it.scene for it in items}) == 15


@pytest.mark.parametrize("tree", ["agnet_lclu", "agnet_crop"])
def test_every_agnet_label_value_is_mapped_or_ignored(shared_data, tree):
    """All 341 Ag-Net labels encode under the strict default (the 131 'barren' code once stopped a run)."""
    import numpy as np
    import rasterio

    from hierars import Hierarchy

    h = Hierarchy.builtin(tree)
    known = {v for vs in h.leaf_raw_values.values() for v in vs} | set(h.ignore_values)
    seen: set[int] = set()
    for it in agnet_items(shared_data / "agnet"):
        with rasterio.open(it.label) as src:
            seen |= {int(v) for v in np.unique(src.read(1))}
    assert seen - known == set(), f"{tree}: raw values {sorted(seen - known)} are neither mapped nor ignored"
