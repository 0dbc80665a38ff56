"""A self-contained model: checkpoint metadata round trip (custom tree, bands, normalisation), ``load_model``,
``predict`` on arrays and GeoTIFFs, band checks, the model card, per-level GeoTIFFs + QGIS styles, confidence and
confidence-aware granularity."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

import hierars
from hierars import Hierarchy, SlidingWindowPredictor
from hierars.data import GeoTiffDataset, RasterItem, load_model
from hierars.decoding import jsps, predict_levels
from hierars.granularity import (
    granularity_map,
    level_confidence,
    node_ids,
    node_probabilities,
    path_probabilities,
    summarise_probabilities,
)
from hierars.qml import read_qml_palette
from hierars.training import TrainConfig, load_checkpoint, save_checkpoint, train_run

TREE_YAML = """\
name: mytree
tree:
  vegetation:
    cropland: [corn, soybean]
    forest: [woodland]
  water:
    water: [river, lake]
label_values: {corn: 10, soybean: 11, woodland: 20, river: 30, lake: 31}
colors: {water: "#1060d0", corn: "#f0c000"}
"""
BANDS = ["blue", "green", "red", "nir"]
CRS, TRANSFORM = "EPSG:32633", from_origin(600000.0, 5000000.0, 10.0, 10.0)


def write_image(path, data, names=BANDS, nodata=None):
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype="float32", crs=CRS, transform=TRANSFORM, nodata=nodata) as ds:
        ds.write(data.astype(np.float32))
        for i, n in enumerate(names or []):
            ds.set_band_description(i + 1, n)
    return path


def scene(seed, h=64, w=64):
    """Raw image (4 bands, values ~ hundreds) whose bands follow the label; label raster of raw values."""
    rng = np.random.default_rng(seed)
    raw = rng.choice([10, 11, 20, 30, 31], size=(-(-h // 8), -(-w // 8))).repeat(8, 0).repeat(8, 1)[:h, :w]
    img = np.stack([raw * (b + 1) * 3.0 for b in range(4)]) + rng.normal(0, 20, (4, h, w))
    return img.astype(np.float32), raw.astype(np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-iteration run (fpn + convnext_atto, 32 channels) on GeoTIFFs with a custom tree YAML, then the YAML is
    deleted: the checkpoint alone must rebuild everything."""
    old_umask = os.umask(0o022)
    tmp = tmp_path_factory.mktemp("saved")
    yaml_path = tmp / "mytree.yaml"
    yaml_path.write_text(TREE_YAML)
    tree = Hierarchy.from_yaml(yaml_path)
    items = []
    for k in range(3):
        img, lab = scene(k)
        write_image(tmp / f"img{k}.tif", img)
        with rasterio.open(tmp / f"lab{k}.tif", "w", driver="GTiff", height=64, width=64, count=1, dtype="uint8",
                           crs=CRS, transform=TRANSFORM) as ds:
            ds.write(lab[None])
        items.append(RasterItem(tmp / f"img{k}.tif", tmp / f"lab{k}.tif"))
    mean, std = [400.0, 800.0, 1200.0, 1600.0], [150.0, 300.0, 450.0, 600.0]
    ds_kw = dict(tile_size=32, mean=mean, std=std, band_names=BANDS, source="folder")
    train_ds, val_ds = GeoTiffDataset(items[:2], tree, **ds_kw), GeoTiffDataset(items[2:], tree, **ds_kw)
    cfg = TrainConfig(arch="fpn", encoder="tu-convnext_atto", decoder_channels=32, iterations=2, batch_size=2,
                      seeds=[0], progress=False, source="folder", num_threads=1)
    res = train_run("mine", cfg, tree, train_ds, val_ds, models_dir=tmp / "models", reports_dir=tmp / "reports")
    yaml_path.unlink()
    os.umask(old_umask)
    return {"tmp": tmp, "tree": tree, "ckpt": res["ckpts"][0], "mean": mean, "std": std, "train_ds": train_ds,
            "res": res}


def test_checkpoint_round_trip_with_custom_tree(trained):
    saved = load_model(trained["ckpt"])
    tree = trained["tree"]
    assert not (trained["tmp"] / "mytree.yaml").exists()
    assert saved.hierarchy == tree and saved.hierarchy.name == "mytree" and saved.hierarchy.colors == tree.colors
    assert [p.tolist() for p in saved.hierarchy.palettes()] == [p.tolist() for p in tree.palettes()]
    assert saved.band_names == BANDS and saved.band_indexes is None
    np.testing.assert_allclose(saved.mean, trained["mean"])
    np.testing.assert_allclose(saved.std, trained["std"])
    assert saved.spec["arch"] == "fpn" and saved.spec["in_channels"] == 4 and saved.spec["decoder_channels"] == 32
    assert saved.metadata["hierars_version"] == hierars.__version__
    assert saved.metadata["data"]["n_train"] == len(trained["train_ds"]) == 8
    assert saved.config["iterations"] == 2 and "mIoU_L3_jsps" in saved.metrics
    stored = load_checkpoint(trained["ckpt"])["model"]
    assert all(torch.equal(v, stored[k]) for k, v in saved.model.state_dict().items())
    assert hierars.load_model is load_model  # the package-level facade
    assert os.stat(trained["ckpt"]).st_mode & 0o044 == 0o044  # readable by group and others (umask 022)


def test_model_card(trained):
    card = trained["tmp"] / "models" / "mine" / "MODEL_CARD.md"
    text = card.read_text()
    assert os.stat(card).st_mode & 0o777 == 0o644
    for want in ("# Model card: `mine`", "## Data", "source: `folder`", "| 4 | nir | 1600 | 600 |", "`mytree`",
                 "2 / 3 / 5", "- L3: corn, soybean, woodland, river, lake", "| arch | `'fpn'` |",
                 "mIoU L3 (JSPS)", "mean ± half-range", "hierars predict seed0/ckpt.pt image.tif -o out/",
                 "- tiles: 32 px; training samples: 8 tiles of 2 rasters; validation samples: 4 tiles of 1 rasters"):
        assert want in text, want
    per_seed = trained["res"]["per_seed"][0]
    row = next(line for line in text.splitlines() if line.startswith("| 0 |"))
    assert f"{100 * per_seed['mIoU_L1_jsps']:.1f}" in row


def test_predict_array_equals_the_direct_model_path(trained):
    saved = load_model(trained["ckpt"])
    mean, std = np.array(trained["mean"])[:, None, None], np.array(trained["std"])[:, None, None]
    x, _ = scene(7)
    pred = saved.predict(x, window=64, overlap=0)  # one window: the plain forward pass
    with torch.no_grad():
        want = predict_levels(saved.model(torch.from_numpy(((x - mean) / std).astype(np.float32))[None]),
                              saved.hierarchy, "jsps")[0].numpy()
    assert np.array_equal(pred.levels, want)
    big, _ = scene(8, 100, 90)
    pred = saved.predict(big, window=64, overlap=16, granularity=0.8)
    direct = SlidingWindowPredictor(saved.model, saved.hierarchy, 64, 16, normalize=(trained["mean"], trained["std"]),
                                    progress=False).predict_array(big)
    assert np.array_equal(pred.levels, direct)
    assert np.array_equal(saved.hierarchy.paths.numpy()[pred.path].transpose(2, 0, 1), pred.levels)
    assert pred.confidence.dtype == np.float32 and np.isfinite(pred.confidence).all()
    assert (pred.confidence >= 0).all() and (pred.confidence <= 1 + 1e-6).all()
    assert (np.diff(pred.confidence, axis=0) <= 1e-6).all()  # a child is never surer than its parent
    assert pred.granularity.shape == (100, 90)


def test_band_count_and_names_are_checked(trained, tmp_path):
    saved = load_model(trained["ckpt"])
    x, _ = scene(3)
    with pytest.raises(ValueError, match=r"expected 4 bands \['blue', 'green', 'red', 'nir'\], found 3"):
        saved.predict(x[:3])
    wrong = write_image(tmp_path / "wrong.tif", x, names=["B1", "B2", "B3", "B4"])
    with pytest.raises(ValueError, match=r"wrong\.tif: band names do not match.*expected 4 bands.*found 4 bands "
                                         r"\['B1', 'B2', 'B3', 'B4'\]"):
        saved.predict(wrong)
    ref = saved.predict(x, window=64, overlap=0)
    # named bands in another order, with an extra band: picked by name
    shuffled = write_image(tmp_path / "shuffled.tif", np.concatenate([x[::-1], x[:1] * 0]),
                           names=["NIR", "Red", "Green", "Blue", "swir"])
    got = saved.predict(shuffled, window=64, overlap=0)
    assert got.band_indexes == [4, 3, 2, 1] and np.array_equal(got.levels, ref.levels)
    assert str(got.crs) == CRS and got.transform == TRANSFORM
    unnamed = write_image(tmp_path / "unnamed.tif", x, names=None)
    assert np.array_equal(saved.predict(unnamed, window=64, overlap=0).levels, ref.levels)
    assert np.array_equal(saved.predict(wrong, window=64, overlap=0, bands=[1, 2, 3, 4]).levels, ref.levels)
    with pytest.raises(ValueError, match=r"wrong\.tif: --bands / bands=\[1, 2, 5\] must be 4 band numbers in 1\.\.4"):
        saved.predict(wrong, bands=[1, 2, 5])
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        saved.predict(tmp_path / "nope.tif")


def test_old_foreign_and_custom_checkpoints_are_refused_clearly(trained, tmp_path):
    old = tmp_path / "old.pt"
    save_checkpoint(old, {"model": {}, "iteration": 1, "config": {}, "hierarchy": {"name": "mm5b"}})
    with pytest.raises(ValueError) as err:
        load_model(old)
    msg = str(err.value)
    for want in ("old.pt", "the tree definition ('tree')", "the band names and order ('bands')",
                 "the normalisation statistics ('normalisation')", "the architecture ('model_spec')"):
        assert want in msg
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt is not a readable model checkpoint"):
        load_model(text)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    state = load_checkpoint(trained["ckpt"])
    custom = tmp_path / "custom.pt"
    save_checkpoint(custom, {**state, "model_spec": None})
    with pytest.raises(ValueError, match="custom builder"):
        load_model(custom)


# ------------------------------------------------------------------------------------------- granularity


def tree():
    return Hierarchy({"vegetation": {"cropland": ["corn", "soybean"], "forest": ["woodland"]},
                      "water": {"water": ["river", "lake"]}}, name="mytree")


def test_granularity_labels_cropland_where_corn_vs_soybean_is_unsure():
    h = tree()
    # one pixel: vegetation and cropland fairly sure, corn vs soybean a coin toss
    q = [np.array([0.6, 0.4]), np.array([0.5, 0.1, 0.4]), np.array([0.3, 0.25, 0.05, 0.2, 0.2])]
    q = [v.reshape(-1, 1, 1).astype(np.float32) for v in q]
    out = summarise_probabilities(q, jsps([torch.from_numpy(v).log()[None] for v in q], h)[0].numpy(), h, 0.5,
                                  labels_are_jsps=True)
    ids = node_ids(h)
    assert out["path_labels"][:, 0, 0].tolist() == [0, 0, 0]  # vegetation / cropland / corn
    # P(p) ∝ Π_l q_l(p_l) over the 5 paths: (.09, .075, .003, .032, .032) / .232; node masses along the path
    np.testing.assert_allclose(out["confidence"][:, 0, 0], [0.168 / 0.232, 0.165 / 0.232, 0.09 / 0.232], rtol=1e-4)
    assert out["granularity"][0, 0] == ids[1][0] == 3  # T = 0.5: cropland (1 + 2 roots + class 0)
    gm = [granularity_map(out["path_labels"], out["path_confidence"], t, h)[0, 0] for t in (0.0, 0.5, 0.72, 0.8)]
    assert gm == [ids[2][0], ids[1][0], ids[0][0], 0] == [6, 3, 1, 0]  # corn, cropland, vegetation, root


def test_path_distribution_is_jsps_and_granularity_follows_the_threshold():
    h = tree()
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(1, n, 40, 40, generator=g) * 2 for n in h.num_classes]
    probs = [z.softmax(1)[0].numpy() for z in logits]
    pp = path_probabilities(probs, h)
    assert np.allclose(pp.sum(0), 1, atol=1e-5)
    labels = jsps(logits, h)[0].numpy()
    assert np.array_equal(h.paths.numpy()[pp.argmax(0)].transpose(2, 0, 1), labels)  # argmax P(p) == JSPS
    nodes = node_probabilities(pp, h)
    assert all(np.allclose(m.sum(0), 1, atol=1e-5) for m in nodes)
    conf = level_confidence(nodes, labels, h.ignore_index)
    assert (np.diff(conf, axis=0) <= 1e-6).all()
    leaf_ids = set(node_ids(h)[-1].tolist())
    valid = set(range(1 + sum(h.num_classes)))
    shares = []
    for t in (0.0, 0.3, 0.6, 0.9, 1.01):
        gm = granularity_map(labels, conf, t, h)
        assert set(np.unique(gm).tolist()) <= valid
        shares.append(float(np.isin(gm, list(leaf_ids)).mean()))
        if t == 0.0:
            assert set(np.unique(gm).tolist()) <= leaf_ids  # T = 0: every pixel at the leaf level
        if t == 1.01:
            assert (gm == 0).all()  # T > 1: nothing is sure, the root everywhere
        if t == 0.6:
            assert not set(np.unique(gm).tolist()) <= leaf_ids  # coarser labels appear
    assert shares == sorted(shares, reverse=True) and shares[0] == 1.0 and shares[-1] == 0.0
    # a flat model's leaf softmax is the path distribution itself
    flat = path_probabilities([probs[-1]], h)
    assert np.allclose(flat, probs[-1], atol=1e-6)


# --------------------------------------------------------------------------------------- GeoTIFF outputs
def test_predict_raster_writes_styled_georeferenced_maps(trained, tmp_path):
    old_umask = os.umask(0o022)
    try:
        saved = load_model(trained["ckpt"])
        h = saved.hierarchy
        x, _ = scene(5, 80, 100)
        x[:, :8, :] = -9999.0  # a no-data strip
        src = write_image(tmp_path / "scene.tif", x, nodata=-9999.0)
        res = saved.predict_raster(src, tmp_path / "out" / "scene_pred.tif", window=64, overlap=16, granularity=0.6,
                                   progress=False)
        ref = saved.predict(src, window=64, overlap=16, granularity=0.6)
    finally:
        os.umask(old_umask)
    out = tmp_path / "out"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.iterdir())
    palettes = h.palettes()
    for lv, tif in enumerate(res.level_paths):
        with rasterio.open(tif) as ds:
            assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM and ds.count == 1
            assert ds.dtypes[0] == "uint8" and ds.nodata == 255
            cmap = ds.colormap(1)
            assert [cmap[c][:3] for c in range(h.num_classes[lv])] == [tuple(map(int, p)) for p in palettes[lv]]
            band = ds.read(1)
        assert (band[:8] == 255).all() and np.array_equal(band[8:], ref.levels[lv][8:])
        qml = tif.with_suffix(".qml")
        ET.fromstring(qml.read_text())  # well-formed XML
        entries = read_qml_palette(qml.read_text())
        assert entries == {c: (tuple(map(int, palettes[lv][c])), h.names[lv][c]) for c in range(h.num_classes[lv])}
    assert read_qml_palette(res.styles[1].read_text())[2] == ((0x10, 0x60, 0xD0), "water")  # the tree's colour
    with rasterio.open(res.path) as ds:
        assert ds.count == 3 and ds.crs.to_string() == CRS and np.array_equal(ds.read()[:, 8:], ref.levels[:, 8:])
    with rasterio.open(res.confidence_path) as ds:
        conf = ds.read()
        assert ds.dtypes[0] == "float32" and ds.count == 3 and ds.transform == TRANSFORM
    assert np.isnan(conf[:, :8]).all() and np.allclose(conf[:, 8:], ref.confidence[:, 8:])
    with rasterio.open(res.granularity_path) as ds:
        gran = ds.read(1)
        assert ds.crs.to_string() == CRS and ds.nodata == 255
    assert (gran[:8] == 255).all() and np.array_equal(gran[8:], ref.granularity[8:])
    entries = read_qml_palette(res.granularity_path.with_suffix(".qml").read_text())
    assert len(entries) == 1 + sum(h.num_classes) and entries[3][1] == "L2 cropland" and entries[0][1].startswith(
        "unresolved")
    assert set(np.unique(gran[8:]).tolist()) <= set(entries)
