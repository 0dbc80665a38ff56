"""``hierars predict`` through the installed console script (a subprocess, as a user runs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from hierars import Hierarchy, build_model
from hierars.data.saved_model import model_metadata
from hierars.qml import read_qml_palette
from hierars.training import save_checkpoint

CRS, TRANSFORM = "EPSG:32631", from_origin(300000.0, 5500000.0, 20.0, 20.0)
BANDS = ["red", "green", "blue"]


def hierars_script() -> str:
    script = Path(sys.executable).parent / "hierars"
    return str(script) if script.exists() else shutil.which("hierars") or pytest.skip("no hierars console script")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([hierars_script(), "predict", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})


def write_image(path: Path, seed: int, count: int = 3, names=BANDS) -> Path:
    data = np.random.default_rng(seed).normal(120, 40, (count, 48, 70)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=48, width=70, count=count, dtype="float32", crs=CRS,
                       transform=TRANSFORM) as ds:
        ds.write(data)
        for i, n in enumerate(names or []):
            ds.set_band_description(i + 1, n)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict_cli")
    tree = Hierarchy({"vegetation": {"cropland": ["corn", "soybean"], "forest": ["woodland"]},
                      "water": {"water": ["river", "lake"]}}, name="cli_tree", colors={"corn": "#f0c000"})
    spec = dict(arch="fpn", encoder="tu-convnext_atto", in_channels=3, head="bhccm", fusion="bidirectional",
                decoder_channels=32, dropout=0.1, upsample_logits=True)
    torch.manual_seed(0)
    model = build_model(hierarchy=tree, **spec)
    ckpt = tmp / "models" / "run" / "seed0" / "ckpt.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "iteration": 1, "config": {},
                           **model_metadata(tree, spec, band_names=BANDS, mean=[120.0] * 3, std=[40.0] * 3)})
    images = tmp / "images"
    images.mkdir()
    return {"tmp": tmp, "tree": tree, "ckpt": ckpt, "a": write_image(images / "a.tif", 0),
            "b": write_image(images / "b.tif", 1)}


def test_predict_writes_styled_maps_for_every_image(setup):
    out = setup["tmp"] / "out"
    res = run(str(setup["ckpt"]), str(setup["tmp"] / "images"), "-o", str(out), "--granularity-threshold", "0.5",
              "--window", "32", "--overlap", "8")
    assert res.returncode == 0, res.stderr
    assert "a.tif: wrote a_pred.tif" in res.stdout and "b.tif: wrote b_pred.tif" in res.stdout
    h = setup["tree"]
    for stem in ("a", "b"):
        names = {f"{stem}_pred.tif", f"{stem}_pred_confidence.tif", f"{stem}_pred_granularity.tif",
                 f"{stem}_pred_granularity.qml"} | {f"{stem}_pred_L{lv}.{ext}" for lv in (1, 2, 3) for ext in ("tif", "qml")}
        assert names <= {p.name for p in out.iterdir()}
        for lv in range(3):
            tif = out / f"{stem}_pred_L{lv + 1}.tif"
            with rasterio.open(tif) as ds:
                assert ds.crs.to_string() == CRS and ds.transform == TRANSFORM and ds.shape == (48, 70)
                labels = ds.read(1)
                assert ds.colormap(1)[0][:3] == tuple(map(int, h.palettes()[lv][0]))
            assert set(np.unique(labels).tolist()) <= set(range(h.num_classes[lv]))
            style = read_qml_palette(tif.with_suffix(".qml").read_text())
            assert [style[c][1] for c in range(h.num_classes[lv])] == h.names[lv]
        with rasterio.open(out / f"{stem}_pred.tif") as ds:
            levels = torch.from_numpy(ds.read().astype(np.int64))
        assert bool((h.path_id(levels) >= 0).all())  # the JSPS path: every pixel a valid root-to-leaf path
    assert read_qml_palette((out / "a_pred_L3.qml").read_text())[0] == ((0xF0, 0xC0, 0x00), "corn")


def test_bad_bands_exit_2_in_one_line_from_the_console_script(setup):
    image = write_image(setup["tmp"] / "four.tif", 2, count=4, names=None)
    res = run(str(setup["ckpt"]), str(image), "-o", str(setup["tmp"] / "out_four"), "--no-progress")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = res.stderr.strip().splitlines()
    assert err == [f"hierars predict: error: {image}: wrong number of bands: expected 3 bands ['red', 'green', "
                   "'blue'], found 4 unnamed bands"], res.stderr
    assert not (setup["tmp"] / "out_four" / "four_pred.tif").exists()


@pytest.mark.parametrize("case", ["missing image", "unreadable model", "old checkpoint", "wrong band names"])
def test_errors_are_one_line(setup, case, capsys):
    """The same entry point in-process (each console-script start costs seconds of imports)."""
    from hierars.project.cli import main

    tmp = setup["tmp"]
    model, image = str(setup["ckpt"]), str(setup["a"])
    if case == "missing image":
        image, want = str(tmp / "nope.tif"), "image not found: "
    elif case == "unreadable model":
        (tmp / "bad.pt").write_text("hello")
        model, want = str(tmp / "bad.pt"), "bad.pt is not a readable model checkpoint"
    elif case == "old checkpoint":
        save_checkpoint(tmp / "old.pt", {"model": {}, "iteration": 1, "config": {}})
        model, want = str(tmp / "old.pt"), "old.pt: this checkpoint lacks the tree definition"
    else:
        image = str(write_image(tmp / "nir.tif", 3, names=["nir", "red", "green"]))
        want = "band names do not match the model: expected 3 bands ['red', 'green', 'blue'], found 3 bands"
    assert main(["predict", model, image, "-o", str(tmp / "out_err"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hierars predict: error:") and want in err[0], err
