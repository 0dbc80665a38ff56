"""Inference: JSPS (consistency, brute force), modes, flat lifting, sliding-window GeoTIFF prediction."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.io import DatasetReader
from rasterio.transform import from_origin
from torch import nn

from hierars.data import predict_raster
from hierars.decoding import jsps, lift_flat, predict_levels
from hierars.heads import FlatHead, IndependentHeads
from hierars.hierarchy import Hierarchy

MM5B = Hierarchy.builtin("mm5b")


def random_logits(seed=0, b=2, h=7, w=6, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, h, w, generator=g) * scale for n in MM5B.num_classes]


def test_jsps_always_consistent_on_random_logits():
    for seed in range(3):
        pred = jsps(random_logits(seed, h=16, w=16), MM5B)
        assert pred.shape == (2, 3, 16, 16) and pred.dtype == torch.long
        assert bool((MM5B.path_id(pred) >= 0).all())
    # independent argmax on the same logits is (almost always) not consistent: the test can fail
    argmax = predict_levels(random_logits(0, h=16, w=16), MM5B, mode="argmax")
    assert float((MM5B.path_id(argmax) >= 0).float().mean()) < 0.5


def test_jsps_equals_brute_force_over_paths():
    logits = random_logits(1, b=1, h=4, w=5)
    logp = [F.log_softmax(z, 1)[0] for z in logits]
    pred = jsps(logits, MM5B)[0]
    valid = [
        (a, b, c)
        for a, b, c in itertools.product(*map(range, MM5B.num_classes))
        if int(MM5B.parents[1][b]) == a and int(MM5B.parents[2][c]) == b
    ]
    assert len(valid) == len(MM5B.paths)
    for i, j in itertools.product(range(4), range(5)):
        scores = [sum(float(logp[lv][k, i, j]) for lv, k in enumerate(p)) for p in valid]
        assert tuple(pred[:, i, j].tolist()) == valid[int(np.argmax(scores))]


def test_jsps_equals_argmax_where_argmax_is_consistent():
    logits = random_logits(2, h=32, w=32, scale=6.0)
    a, j = predict_levels(logits, MM5B, "argmax"), predict_levels(logits, MM5B, "jsps")
    ok = MM5B.path_id(a) >= 0
    assert ok.any()
    assert torch.equal(a.permute(1, 0, 2, 3)[:, ok], j.permute(1, 0, 2, 3)[:, ok])


def test_hssn_mode_is_consistent_and_upsamples():
    logits = random_logits(3, h=4, w=4)
    logits[0] = logits[0][..., :2, :2]  # coarser output resolution
    pred = predict_levels(logits, MM5B, mode="hssn", size=(8, 8))
    assert pred.shape == (2, 3, 8, 8) and bool((MM5B.path_id(pred) >= 0).all())
    with pytest.raises(ValueError, match="mode"):
        predict_levels(logits, MM5B, mode="vote")
    with pytest.raises(ValueError, match="channels"):
        predict_levels(logits[::-1], MM5B)


def test_lift_flat_from_labels_keeps_ignore():
    fine = torch.tensor([[[0, 17], [255, 9]]])
    out = lift_flat(fine, MM5B)
    assert out.shape == (1, 3, 2, 2)
    assert out[0, :, 1, 0].tolist() == [255, 255, 255]
    assert out[0, :, 0, 1].tolist() == MM5B.paths[17].tolist()


# ------------------------------------------------------------------------------------------ rasters
class Pointwise(nn.Module):
    """A model without spatial context (1×1 convs only): tiling cannot change its prediction."""

    def __init__(self, bands=3, flat=False):
        super().__init__()
        self.conv = nn.Conv2d(bands, 16, 1)
        head = FlatHead if flat else IndependentHeads
        self.head = head(16, MM5B.num_classes, dropout=0.0)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)))


def write_scene(path, h=150, w=300, bands=3, nodata=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 1000, size=(bands, h, w)).astype(np.uint16)
    if nodata is not None:
        data[:, :10, :20] = nodata
    transform = from_origin(500000.0, 4000000.0, 10.0, 10.0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=bands,
        dtype="uint16",
        crs="EPSG:32650",
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return data


@pytest.fixture
def read_spy(monkeypatch):
    calls = []
    real = DatasetReader.read

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("window"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DatasetReader, "read", spy)
    return calls


@pytest.mark.parametrize("mode", ["jsps", "argmax", "hssn"])
def test_predict_raster_matches_full_image_and_reads_windows_only(tmp_path, read_spy, mode):
    torch.manual_seed(0)
    src, dst = tmp_path / "scene.tif", tmp_path / "pred.tif"
    data = write_scene(src)
    model = Pointwise()
    mean, std = [500.0] * 3, [300.0] * 3
    info = predict_raster(
        model,
        src,
        dst,
        MM5B,
        window=64,
        overlap=16,
        batch_size=3,
        normalize=(mean, std),
        mode=mode,
        progress=False,
    )
    # reads: always windowed, never larger than the window
    reads = list(read_spy)
    assert len(reads) == info.num_windows == 3 * 6  # rows 0, 48, 86; columns 0, 48, ..., 192, 236
    assert all(w is not None and w.height <= 64 and w.width <= 64 for w in reads)
    # blending buffers hold far less than the scene: about one tile + one overlap strip
    assert info.peak_buffer_pixels <= 64 * 64 + 2 * 16 * 300
    assert info.peak_buffer_pixels < 0.35 * 150 * 300
    # the same prediction as running the model on the whole image at once
    x = (torch.from_numpy(data.astype(np.float32)) - 500.0) / 300.0
    with torch.no_grad():
        full = predict_levels(model(x[None]), MM5B, mode=mode)[0].numpy()
    with rasterio.open(dst) as out:
        pred = out.read()
        assert out.crs.to_epsg() == 32650
        assert out.transform == from_origin(500000.0, 4000000.0, 10.0, 10.0)
        assert pred.shape == (3, 150, 300) and pred.dtype == np.uint8 and out.nodata == 255
        assert out.descriptions[2].startswith("L3: paddy_field")
        assert json.loads(out.tags(1)["class_names"]) == MM5B.names[0]
    assert (pred == full).mean() > 0.999
    if mode != "argmax":
        assert bool((MM5B.path_id(torch.from_numpy(pred.astype(np.int64))) >= 0).all())


def test_prediction_files_carry_colours_and_names(tmp_path):
    src, dst = tmp_path / "scene.tif", tmp_path / "out" / "pred.tif"
    write_scene(src, h=40, w=50, nodata=0)
    info = predict_raster(Pointwise(), src, dst, MM5B, window=32, overlap=8, progress=False)
    palettes = MM5B.palettes()
    assert [p.name for p in info.level_paths] == ["pred_L1.tif", "pred_L2.tif", "pred_L3.tif"]
    assert [p.name for p in info.styles] == ["pred_L1.qml", "pred_L2.qml", "pred_L3.qml"]
    for level, level_tif in enumerate(info.level_paths):
        with rasterio.open(level_tif) as ds:
            cmap = ds.colormap(1)
            assert all(cmap[c][:3] == tuple(palettes[level][c]) for c in range(MM5B.num_classes[level]))
            assert ds.crs.to_epsg() == 32650 and ds.descriptions[0].startswith(f"L{level + 1}:")
            band = ds.read(1)
    with rasterio.open(dst) as out:
        assert np.array_equal(out.read(3), band)
        assert out.colormap(1)[0][:3] == tuple(palettes[0][0])  # PAM colour table of band 1
        pred = out.read()
    assert (pred[:, :10, :20] == 255).all()  # source nodata → ignore
    assert (pred[:, 10:, :] < 255).all()


def test_flat_model_small_scene_no_crs(tmp_path):
    src, dst = tmp_path / "small.tif", tmp_path / "pred.tif"
    data = np.random.default_rng(1).normal(size=(4, 20, 30)).astype(np.float32)
    with rasterio.open(src, "w", driver="GTiff", height=20, width=30, count=4, dtype="float32") as f:
        f.write(data)
    data = data[[3, 0, 1]]  # bands=[4, 1, 2]
    model = Pointwise(flat=True)
    predict_raster(model, src, dst, MM5B, window=32, overlap=8, mode="jsps", bands=[4, 1, 2], progress=False)
    with torch.no_grad():
        want = lift_flat(model(torch.from_numpy(data)[None]), MM5B)[0].numpy()
    with rasterio.open(dst) as out:
        assert out.crs is None
        assert (out.read() == want).mean() > 0.999


def test_predict_raster_bad_arguments(tmp_path):
    src = tmp_path / "scene.tif"
    write_scene(src, h=20, w=20)
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        predict_raster(Pointwise(), tmp_path / "nope.tif", tmp_path / "o.tif", MM5B)
    with pytest.raises(ValueError, match="overlap"):
        predict_raster(Pointwise(), src, tmp_path / "o.tif", MM5B, window=32, overlap=32)
    with pytest.raises(ValueError, match="normalize"):
        predict_raster(Pointwise(), src, tmp_path / "o.tif", MM5B, normalize=([0.0], [1.0]), progress=False)


def test_real_gid15_tile_end_to_end(shared_data, tmp_path):
    """build_model → predict_raster → HierarchicalMetrics on a real GID-15 patch (no CRS, 3-band uint8)."""
    from hierars.metrics import HierarchicalMetrics
    from hierars.models import build_model

    gid = Hierarchy.builtin("gid15")
    image = shared_data / "gid15" / "image" / "urban_residential" / "5.tif"
    label = shared_data / "gid15" / "label_gray" / "urban_residential" / "5.tif"
    torch.manual_seed(0)
    model = build_model("fpn", "tu-convnext_atto", 3, gid, head="bhccm", decoder_channels=32)
    info = predict_raster(
        model, image, tmp_path / "pred.tif", gid, window=128, overlap=32, batch_size=4,
        normalize=([127.0] * 3, [64.0] * 3), progress=False,
    )  # fmt: skip
    assert info.num_windows == 4 and info.shape == (224, 224)
    with rasterio.open(tmp_path / "pred.tif") as out, rasterio.open(label) as lab:
        pred = torch.from_numpy(out.read().astype(np.int64))
        target = gid.encode(lab.read(1))
    assert pred.shape == target.shape == (3, 224, 224)
    meter = HierarchicalMetrics(gid)
    meter.update(pred, target)
    res = meter.compute()
    assert res["consistency"] == 1.0  # JSPS
    assert res["num_pixels"][2] == int((target[2] != 255).sum()) > 0
    assert all(0.0 <= m <= 1.0 for m in res["mIoU"])
