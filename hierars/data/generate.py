"""Generated data of the synthetic prepare stage: the MM-5B-like scenes in every source, the
Crop10m-like and WHDLD-like transfer domains and the retrieval archive, written as GeoTIFFs with
their label rasters (one seeded generator per scene, so the same seed gives the same bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin
from tqdm.auto import tqdm

from hierars.atomic import atomic_write_csv
from hierars.data import synthetic as syn
from hierars.data.config import PrepareConfig
from hierars.data.labels import colormap, label_tags, load_hierarchy, raw_values, unlabeled_value
from hierars.data.manifest import rel_path
from hierars.data.rasters import RasterItem, write_geotiff
from hierars.hierarchy import Hierarchy

__all__ = ["write_mm5b", "write_crop10m", "write_whdld", "write_retrieval"]

CRS_UTM = CRS.from_epsg(32650)  # WGS 84 / UTM 50N (central China)


def _sem_lut(h: Hierarchy, domain: str) -> np.ndarray:
    """uint8 LUT semantic class index (and 255) -> raw label value of the domain's tree."""
    to_leaf = syn.semantic_to_leaf(domain)
    raw = raw_values(h)
    lut = np.full(256, unlabeled_value(h), np.uint8)
    for i, c in enumerate(syn.SEMANTIC_CLASSES):
        leaf = to_leaf(c)
        if leaf not in raw:
            raise ValueError(f"semantic class {c!r} maps to {leaf!r}, which is not a leaf of {h.name!r}")
        lut[i] = raw[leaf]
    return lut

def _scene_rng(seed: int, domain: str, k: int) -> np.random.Generator:
    tag = sum(ord(c) * 31**i for i, c in enumerate(domain)) % (1 << 31)
    return np.random.default_rng([seed, tag, k])



# features forced per scene, cycled separately inside the train and the val scenes so that both
# splits contain every class
_MM5B_CYCLE: tuple[tuple[str, ...], ...] = (
    ("urban", "stadium", "highway", "river"),
    ("rail", "pond_cluster", "industrial_park", "urban"),
    ("airport", "river", "pond_cluster"),
    ("urban", "highway", "rail", "stadium"),
)


def _labels_per_source(sem_raw: np.ndarray, render_res: float, sources: list[str]) -> dict[str, np.ndarray]:
    """The canonical 4 m label (area mode of the render-grid label), then nearest / mode onto
    each source grid (as MM-5B aligns its 4 m labels to 1 m and 10 m imagery)."""
    f4 = int(round(4.0 / render_res))
    lab4 = syn.block_mode(sem_raw, f4) if f4 > 1 else sem_raw
    up = np.repeat(np.repeat(lab4, f4, 0), f4, 1)  # the 4 m label on the render grid
    out = {}
    for s in sources:
        r = syn.SOURCES[s][0]
        if r == 4.0:
            out[s] = lab4
        elif r < 4.0:
            k = int(round(4.0 / r))
            out[s] = np.repeat(np.repeat(lab4, k, 0), k, 1)
        else:
            out[s] = syn.block_mode(up, int(round(r / render_res)))
    return out


def write_mm5b(cfg: PrepareConfig, out: Path, seed: int) -> dict[str, dict[str, list[RasterItem]]]:
    sc = cfg.synthetic
    h = load_hierarchy(cfg.hierarchy or "mm5b")
    lut = _sem_lut(h, "mm5b")
    render_res = 2.0
    n = int(round(sc.scene_size_m / render_res))
    splits: dict[str, dict[str, list[RasterItem]]] = {s: {"train": [], "val": []} for s in cfg.sources}
    counters = {"train": 0, "val": 0}
    cmap, tags = colormap(h), label_tags(h)
    for k in tqdm(range(sc.n_scenes), desc="mm5b scenes"):
        split = "val" if k % sc.val_every == sc.val_every - 1 else "train"
        force = _MM5B_CYCLE[counters[split] % len(_MM5B_CYCLE)]
        counters[split] += 1
        rng = _scene_rng(seed, "mm5b", k)
        lay = syn.layout_scene(rng, n, render_res, syn.SceneRecipe(), force=force)
        refl = syn.render_reflectance(lay, rng)
        labels = _labels_per_source(lut[lay.sem], render_res, cfg.sources)
        name = f"scene_{k:03d}"
        x0, y0 = 500000.0 + k * (sc.scene_size_m + 2000.0), 3500000.0
        for s in cfg.sources:
            res, bands, _ = syn.SOURCES[s]
            img = syn.render_source(refl, render_res, s, rng, haze=sc.haze, noise_scale=sc.noise)
            tr = from_origin(x0, y0, res, res)
            ip = write_geotiff(
                out / "mm5b" / s / "image" / f"{name}.tif",
                img,
                tr,
                CRS_UTM,
                band_names=bands,
                tags={"source": s, "resolution_m": str(res), "scale": "1" if s == "rgb" else "1e-4"},
            )
            lp = write_geotiff(out / "mm5b" / s / "label" / f"{name}.tif", labels[s], tr, CRS_UTM,
                               nodata=unlabeled_value(h), colormap=cmap, tags=tags)  # fmt: skip
            splits[s][split].append(RasterItem(ip, lp, scene=name))
    return splits


def write_crop10m(cfg: PrepareConfig, out: Path, seed: int) -> dict[str, list[RasterItem]]:
    dc = cfg.crop10m
    h = load_hierarchy("crop10m")
    lut = _sem_lut(h, "crop10m")
    render_res = 5.0
    n = int(round(dc.scene_size_m / render_res))
    recipe = syn.SceneRecipe(
        forest=(0.03, 0.1), meadow=(0.02, 0.06), bare=(0.0, 0.02), river=0.5, lakes=(0, 1), pond_cluster=0.1,
        ponds=(0, 3), urban=0.1, villages=(1, 4), industrial_park=0.1, highways=(0, 1), rail=0.1, airport=0.0,
        block_m=900.0, parcel_m=(80.0, 220.0), paddy_bias=0.05,
        crops={"rice": 0.3, "maize": 0.35, "soybean": 0.25, "other_crop": 0.1},
    )  # fmt: skip
    splits: dict[str, list[RasterItem]] = {"train": [], "val": []}
    cmap, tags = colormap(h), label_tags(h)
    for k in tqdm(range(dc.n_scenes), desc="crop10m scenes"):
        split = "val" if k % dc.val_every == dc.val_every - 1 else "train"
        rng = _scene_rng(seed, "crop10m", k)
        lay = syn.layout_scene(rng, n, render_res, recipe)
        refl = syn.render_reflectance(lay, rng)
        img = syn.render_source(refl, render_res, "s2", rng)
        lab = syn.block_mode(lut[lay.sem], 2)
        name = f"scene_{k:03d}"
        tr = from_origin(300000.0 + k * (dc.scene_size_m + 5000.0), 5200000.0, 10.0, 10.0)
        ip = write_geotiff(out / "crop10m" / "image" / f"{name}.tif", img, tr, CRS.from_epsg(32652),
                           band_names=syn.SOURCES["s2"][1], tags={"source": "s2", "scale": "1e-4"})  # fmt: skip
        lp = write_geotiff(out / "crop10m" / "label" / f"{name}.tif", lab, tr, CRS.from_epsg(32652),
                           nodata=unlabeled_value(h), colormap=cmap, tags=tags)  # fmt: skip
        splits[split].append(RasterItem(ip, lp, scene=name))
    return splits


def _whdld_label(lay: syn.SceneLayout, h: Hierarchy) -> np.ndarray:
    raw = raw_values(h)
    lut = np.array([raw[c] for c in syn.WHDLD_CLASSES], np.uint8)
    lab = lut[syn.material_to_whdld(lay)]
    lab[lay.sem == syn.UNLABELED] = unlabeled_value(h)
    return lab


def write_whdld(cfg: PrepareConfig, out: Path, seed: int) -> dict[str, list[RasterItem]]:
    dc = cfg.whdld
    h = load_hierarchy("whdld")
    n = int(round(dc.scene_size_m / 2.0))
    recipe = syn.SceneRecipe(urban=0.9, villages=(1, 3), industrial_park=0.5, highways=(1, 2), rail=0.2,
                             airport=0.0, lakes=(0, 1), block_m=350.0)  # fmt: skip
    splits: dict[str, list[RasterItem]] = {"train": [], "val": []}
    cmap, tags = colormap(h), label_tags(h)
    for k in tqdm(range(dc.n_scenes), desc="whdld scenes"):
        split = "val" if k % dc.val_every == dc.val_every - 1 else "train"
        rng = _scene_rng(seed, "whdld", k)
        lay = syn.layout_scene(rng, n, 2.0, recipe, force=("urban",))
        img = syn.render_source(syn.render_reflectance(lay, rng), 2.0, "rgb", rng)
        name = f"scene_{k:03d}"
        tr = from_origin(200000.0 + k * (dc.scene_size_m + 2000.0), 3380000.0, 2.0, 2.0)
        ip = write_geotiff(out / "whdld" / "image" / f"{name}.tif", img, tr, CRS.from_epsg(32649),
                           band_names=syn.SOURCES["rgb"][1])  # fmt: skip
        lp = write_geotiff(out / "whdld" / "label" / f"{name}.tif", _whdld_label(lay, h), tr, CRS.from_epsg(32649),
                           nodata=unlabeled_value(h), colormap=cmap, tags=tags)  # fmt: skip
        splits[split].append(RasterItem(ip, lp, scene=name))
    return splits


def write_retrieval(cfg: PrepareConfig, out: Path, seed: int) -> dict[str, list[RasterItem]]:
    rc = cfg.retrieval
    hw, hm = load_hierarchy("whdld"), load_hierarchy("mm5b")
    lut_m = _sem_lut(hm, "mm5b")
    jobs = []
    for scene in syn.RETRIEVAL_SCENES:
        if scene == "residential":
            jobs += [(scene, d, i) for d in syn.RESIDENTIAL_DENSITY for i in range(rc.per_density)]
        else:
            jobs += [(scene, "", i) for i in range(rc.per_class)]
    rows, splits = [], {"archive": [], "query": []}
    n = rc.patch_px
    for j, (scene, sub, i) in enumerate(tqdm(jobs, desc="retrieval patches")):
        rng = _scene_rng(seed, f"retrieval/{scene}/{sub}", i)
        lay = syn.layout_retrieval_patch(rng, n, 2.0, scene, sub)
        img = syn.render_source(syn.render_reflectance(lay, rng), 2.0, "rgb", rng)
        name = f"{scene}{'_' + sub if sub else ''}_{i:03d}"
        tr = from_origin(100000.0 + (j % 50) * 1000.0, 3300000.0 - (j // 50) * 1000.0, 2.0, 2.0)
        ip = write_geotiff(
            out / "retrieval" / "image" / f"{name}.tif", img, tr, CRS_UTM, band_names=("red", "green", "blue")
        )
        lp = write_geotiff(out / "retrieval" / "label" / f"{name}.tif", _whdld_label(lay, hw), tr, CRS_UTM,
                           nodata=unlabeled_value(hw), colormap=colormap(hw), tags=label_tags(hw))  # fmt: skip
        lm = write_geotiff(out / "retrieval" / "label_mm5b" / f"{name}.tif", lut_m[lay.sem], tr, CRS_UTM,
                           nodata=unlabeled_value(hm), colormap=colormap(hm), tags=label_tags(hm))  # fmt: skip
        n_group = rc.per_density if scene == "residential" else rc.per_class
        n_query = min(n_group - 1, max(1, round(rc.query_fraction * n_group)))  # the archive is never empty
        split = "query" if i >= n_group - n_query else "archive"
        splits[split].append(RasterItem(ip, lp, scene, sub))
        rows.append({"image": rel_path(ip, out), "label": rel_path(lp, out), "label_mm5b": rel_path(lm, out), "scene": scene,
                     "sub_label": sub, "withheld": int(bool(sub)), "split": split})  # fmt: skip
    atomic_write_csv(out / "retrieval" / "index.csv", rows)
    return splits
