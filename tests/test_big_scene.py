"""A scene bigger than memory: 16384 x 16384 px, 3 bands, tiled and compressed (3.2 GB as float32), predicted with
bounded memory by :func:`hierars.data.predict_raster` (windowed reads, cells written as they finish).

The prediction runs in a child process that reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``), so
the test measures the predictor alone, not pytest. This file is also that child: ``python test_big_scene.py SRC DST``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

SIZE = 16384
BLOCK = 512
MAX_RSS_MB = 1536  # 1.5 GB
WINDOW = 768  # peak RSS at 1024-px windows varied 1.25-1.44 GB between runs (once 1.57 GB with a 256 MB GDAL cache); 1.17 GB at 768
TRANSFORM = from_origin(300000.0, 4_500_000.0, 2.0, 2.0)
CRS_ = CRS.from_epsg(32650)


def write_big_scene(path: Path, size: int = SIZE, block: int = BLOCK) -> None:
    """A ``size``² 3-band uint8 GeoTIFF (deflate, ``block``² tiles) written one block at a time (small memory).

    Content: smooth stripes and blobs that change from block to block, so windows differ and the file compresses.
    """
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", crs=CRS_, transform=TRANSFORM,
                   tiled=True, blockxsize=block, blockysize=block, compress="deflate", zlevel=1, predictor=2,
                   BIGTIFF="IF_SAFER")
    yy, xx = np.mgrid[0:block, 0:block].astype(np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                k = (r // block) * 7 + (c // block) * 3
                a = 127 + 100 * np.sin((xx + c) / (40 + k % 23)) * np.cos((yy + r) / (55 + k % 17))
                arr = np.stack([a, np.roll(a, k % 50, axis=0), 255 - a]).astype(np.uint8)
                dst.write(arr, window=Window(c, r, block, block))


def _predict_child(src: str, dst: str) -> None:
    """The child process: a tiny conv model + per-level heads on the crop10m tree, then print a JSON report."""
    import torch
    from torch import nn

    from hierars import Hierarchy
    from hierars.data import predict_raster
    from hierars.heads import IndependentHeads

    torch.set_num_threads(1)
    torch.manual_seed(0)
    h = Hierarchy.builtin("crop10m")
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), IndependentHeads(4, h.num_classes, dropout=0.0))
    t0 = time.perf_counter()
    res = predict_raster(model, src, dst, h, window=WINDOW, overlap=32, batch_size=1, mode="argmax",
                         normalize=([127.0] * 3, [64.0] * 3), progress=False)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak_rss_mb": peak_mb, "seconds": time.perf_counter() - t0, "num_windows": res.num_windows,
                      "peak_buffer_pixels": res.peak_buffer_pixels, "shape": list(res.shape)}))


@pytest.mark.slow
def test_predict_16k_scene_with_bounded_memory(tmp_path: Path) -> None:
    src, dst = tmp_path / "scene.tif", tmp_path / "pred.tif"
    write_big_scene(src)
    with rasterio.open(src) as s:
        assert (s.width, s.height, s.count) == (SIZE, SIZE, 3) and s.block_shapes[0] == (BLOCK, BLOCK)
        assert s.compression is not None
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    run = subprocess.run([sys.executable, __file__, str(src), str(dst)], env=env, capture_output=True, text=True,
                         timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    print(report)
    assert report["peak_rss_mb"] < MAX_RSS_MB, report
    assert report["shape"] == [SIZE, SIZE]
    # blending buffers never held more than a window plus a 128-row strip across the scene (1 % of it)
    assert report["peak_buffer_pixels"] < WINDOW * WINDOW + 128 * SIZE
    with rasterio.open(dst) as out:
        assert out.crs == CRS_ and out.transform == TRANSFORM
        assert (out.width, out.height, out.count) == (SIZE, SIZE, 3)
        corner = out.read(window=Window(SIZE - 256, SIZE - 256, 256, 256))
        middle = out.read(window=Window(8000, 8000, 256, 256))
    for arr in (corner, middle):  # written everywhere (no nodata left), with valid class indices per level
        assert (arr != 255).all()
        assert all(arr[lv].max() < n for lv, n in enumerate((2, 2, 4)))


if __name__ == "__main__":
    _predict_child(sys.argv[1], sys.argv[2])
