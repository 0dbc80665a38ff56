"""Synthetic benchmark: co-registration, label resampling, formats, valid paths, determinism, difficulty."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from hierars.data import PrepareConfig, build_dataset, prepare, read_retrieval_index
from hierars.data import synthetic as syn
from hierars.data.difficulty import spectral_accuracy
from hierars.hierarchy import Hierarchy

TINY = {
    "synthetic": {"n_scenes": 4, "scene_size_m": 640, "val_every": 2},
    "crop10m": {"n_scenes": 2, "scene_size_m": 1280, "val_every": 2},
    "whdld": {"n_scenes": 2, "scene_size_m": 512, "val_every": 2},
    "retrieval": {"per_class": 2, "per_density": 3, "patch_px": 64},
}
MICRO = {  # for the determinism test (two runs)
    "synthetic": {"n_scenes": 2, "scene_size_m": 320, "val_every": 2},
    "crop10m": {"n_scenes": 2, "scene_size_m": 640, "val_every": 2},
    "whdld": {"n_scenes": 2, "scene_size_m": 320, "val_every": 2},
    "retrieval": {"per_class": 1, "per_density": 1, "patch_px": 32},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep")
    prepare(PrepareConfig(seed=3, **TINY), out)
    return out


def _scenes(out: Path, source: str) -> list[Path]:
    return sorted((out / "mm5b" / source / "image").glob("*.tif"))


def test_outputs_and_summary(tiny):
    for f in ("manifest.json", "splits.json", "stats.json", "summary.json"):
        assert (tiny / f).exists()
    stats = json.loads((tiny / "stats.json").read_text())
    assert len(stats["s2"]["mean"]) == 10 and len(stats["gf2"]["std"]) == 4 and len(stats["rgb"]["mean"]) == 3
    assert all(s > 0 for s in stats["s2"]["std"])
    splits = json.loads((tiny / "splits.json").read_text())
    tr = {d["scene"] for d in splits["s2"]["train"]}
    va = {d["scene"] for d in splits["s2"]["val"]}
    assert tr and va and not tr & va  # scene-level (spatially separate) split


@pytest.mark.parametrize(
    "source,res,bands,dtype",
    [("rgb", 2.0, 3, "uint8"), ("gf2", 4.0, 4, "uint16"), ("s2", 10.0, 10, "uint16")],
)
def test_band_counts_dtypes_resolutions(tiny, source, res, bands, dtype):
    for img in _scenes(tiny, source):
        with rasterio.open(img) as ds, rasterio.open(img.parent.parent / "label" / img.name) as ls:
            assert ds.count == bands and ds.dtypes[0] == dtype
            assert ds.res == (res, res) and ds.crs.is_projected and ds.crs.to_epsg() == 32650
            assert ls.count == 1 and ls.dtypes[0] == "uint8" and ls.res == (res, res)
            assert ls.bounds == ds.bounds and ls.crs == ds.crs
            assert ds.width == round(640 / res)


def test_sources_overlay_same_bounds(tiny):
    for rgb, gf2, s2 in zip(_scenes(tiny, "rgb"), _scenes(tiny, "gf2"), _scenes(tiny, "s2"), strict=True):
        with rasterio.open(rgb) as a, rasterio.open(gf2) as b, rasterio.open(s2) as c:
            assert a.bounds == b.bounds == c.bounds
            assert a.crs == b.crs == c.crs
    # different scenes do not overlap (spatially separate splits)
    bounds = [rasterio.open(p).bounds for p in _scenes(tiny, "s2")]
    assert all(b1.right < b2.left for b1, b2 in zip(bounds, bounds[1:]))


def test_sources_show_the_same_surface(tiny):
    """Co-registration in the pixels: S2 red aggregated from GF2 red correlates strongly."""
    img = _scenes(tiny, "gf2")[0]
    gf2 = rasterio.open(img).read(3).astype(float)
    s2 = rasterio.open(tiny / "mm5b" / "s2" / "image" / img.name).read(3).astype(float)
    up = np.repeat(np.repeat(gf2, 2, 0), 2, 1).reshape(64, 5, 64, 5).mean((1, 3))  # 4 m -> 2 m -> 10 m
    assert np.corrcoef(up.ravel(), s2.ravel())[0, 1] > 0.9
    shifted = np.roll(up, 3, axis=1)
    assert np.corrcoef(shifted.ravel(), s2.ravel())[0, 1] < np.corrcoef(up.ravel(), s2.ravel())[0, 1] - 0.1


def _area_mode(lab4: np.ndarray, res_out: float = 10.0, res_in: float = 4.0) -> np.ndarray:
    """Independent reference: area-weighted mode of 4 m pixels inside each 10 m pixel (loops)."""
    n_out = int(lab4.shape[0] * res_in / res_out)
    out = np.zeros((n_out, n_out), np.uint8)
    for i in range(n_out):
        for j in range(n_out):
            y0, y1, x0, x1 = i * res_out, (i + 1) * res_out, j * res_out, (j + 1) * res_out
            w: dict[int, float] = {}
            for r in range(int(y0 // res_in), int(np.ceil(y1 / res_in))):
                oy = min(y1, (r + 1) * res_in) - max(y0, r * res_in)
                for c in range(int(x0 // res_in), int(np.ceil(x1 / res_in))):
                    ox = min(x1, (c + 1) * res_in) - max(x0, c * res_in)
                    v = int(lab4[r, c])
                    w[v] = w.get(v, 0.0) + oy * ox
            best = max(w.values())
            out[i, j] = min(v for v, a in w.items() if a == best)
    return out


def test_label_resampling_consistent(tiny):
    for img in _scenes(tiny, "gf2")[:2]:
        lab4 = rasterio.open(img.parent.parent / "label" / img.name).read(1)
        lab2 = rasterio.open(tiny / "mm5b" / "rgb" / "label" / img.name).read(1)
        lab10 = rasterio.open(tiny / "mm5b" / "s2" / "label" / img.name).read(1)
        assert np.array_equal(lab2, np.repeat(np.repeat(lab4, 2, 0), 2, 1))  # nearest upsampling
        assert np.array_equal(lab10, _area_mode(lab4))  # area mode
        up10 = np.repeat(np.repeat(lab10, 5, 0), 5, 1)  # both on the 2 m grid
        assert (up10 == lab2).mean() > 0.8


def test_every_label_pixel_valid_path_or_ignore(tiny):
    for source in ("rgb", "gf2", "s2", "crop10m", "whdld"):
        ds = build_dataset(tiny, "all", source=source)
        h: Hierarchy = ds.hierarchy
        seen = torch.zeros(h.num_classes[-1], dtype=torch.bool)
        for i in range(len(ds)):
            m = ds[i]["mask"]
            assert m.dtype == torch.int64 and m.shape[0] == h.num_levels
            pid = h.path_id(m)
            ignored = (m == 255).all(0)
            assert ((pid >= 0) | ignored).all(), source
            assert not ((m == 255).any(0) & ~ignored).any()  # ignore is ignore at every level
            seen[pid[pid >= 0].unique()] = True
        assert seen.sum() >= min(4, h.num_classes[-1]), source


def test_unlabeled_is_small_but_present(tiny):
    shares = json.loads((tiny / "summary.json").read_text())["class_shares_4m"]
    assert 0 < shares["unlabeled"] < 0.06
    assert sum(v for k, v in shares.items()) == pytest.approx(1.0, abs=1e-3)


def test_forced_features_paint_their_classes():
    rng = np.random.default_rng(0)
    lay = syn.layout_scene(rng, 640, 2.0, syn.SceneRecipe(), force=("airport", "river", "pond_cluster"))
    present = {syn.SEMANTIC_CLASSES[v] for v in np.unique(lay.sem) if v != 255}
    assert {"airport", "river", "pond", "cropland", "paddy_field"} <= present
    lay = syn.layout_scene(rng, 640, 2.0, syn.SceneRecipe(), force=("urban", "stadium", "rail", "highway"))
    present = {syn.SEMANTIC_CLASSES[v] for v in np.unique(lay.sem) if v != 255}
    assert {"urban_residential", "stadium", "railway_station", "road"} <= present


def test_urban_denser_than_rural_and_density_labels():
    """Residential siblings differ by building density (the spatial cue)."""
    rng = np.random.default_rng(1)
    cover = {}
    for sub in ("dense", "medium", "sparse"):
        lay = syn.layout_retrieval_patch(rng, 96, 2.0, "residential", sub)
        cover[sub] = (syn.material_to_whdld(lay) == syn.WHDLD_CLASSES.index("building")).mean()
    assert cover["dense"] > cover["medium"] > cover["sparse"]


def test_retrieval_index(tiny):
    rows = read_retrieval_index(tiny)
    assert {r["scene"] for r in rows} == set(syn.RETRIEVAL_SCENES)
    res = [r for r in rows if r["scene"] == "residential"]
    assert {r["sub_label"] for r in res} == {"dense", "medium", "sparse"} and all(r["withheld"] for r in res)
    assert not any(r["withheld"] for r in rows if r["scene"] != "residential")
    assert {r["split"] for r in rows} == {"archive", "query"}
    for r in rows[:3]:
        assert Path(r["image"]).exists() and Path(r["label"]).exists() and Path(r["label_mm5b"]).exists()


def test_normalisation_uses_stored_stats(tiny):
    raw = build_dataset(tiny, "train", source="gf2", normalize=False)
    norm = build_dataset(tiny, "train", source="gf2")
    stats = json.loads((tiny / "stats.json").read_text())["gf2"]
    a, b = raw[0]["image"], norm[0]["image"]
    exp = (a - torch.tensor(stats["mean"])[:, None, None]) / torch.tensor(stats["std"])[:, None, None]
    assert torch.allclose(b, exp, atol=1e-4)
    assert raw[0]["image"].dtype == torch.float32


def _hashes(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "summary.json"
    }


def test_same_seed_byte_identical(tmp_path):
    prepare(PrepareConfig(seed=7, **MICRO), tmp_path / "a")
    prepare(PrepareConfig(seed=7, **MICRO), tmp_path / "b")
    prepare(PrepareConfig(seed=8, **MICRO), tmp_path / "c")
    ha, hb, hc = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert len(ha) > 20 and ha == hb
    tifs = [k for k in ha if k.endswith(".tif")]
    assert sum(ha[k] != hc[k] for k in tifs) > 0.9 * len(tifs)


def test_coarse_levels_spectrally_easier_than_fine(tiny):
    acc = spectral_accuracy(str(tiny), "gf2", max_pixels=8000)
    lv = acc["levels"]
    assert lv["L1"]["logreg_oa"] > lv["L3"]["logreg_oa"] + 0.1
    assert lv["L1"]["logreg_oa"] > 0.6


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError):
        PrepareConfig(bogus=1)
    with pytest.raises(ValueError, match="multiple of 20"):
        PrepareConfig(synthetic={"scene_size_m": 650})
    with pytest.raises(ValueError, match="root"):
        PrepareConfig(source="gid15")
    cfg = PrepareConfig.from_params({"seed": 5, "prepare": {"synthetic": {"n_scenes": 3}}})
    assert cfg.seed == 5 and cfg.synthetic.n_scenes == 3
