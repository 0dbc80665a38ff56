"""The user's path through DVC: a folder of their own GeoTIFF tiles -> ``dvc repro prepare`` -> ``train@<run>``.

In a temporary copy of this checkout's files (tracked, and untracked ones git does not ignore, as a fresh git
repository) with this ``.venv`` reached by path, a tiny folder dataset is built outside the copy (3 x 3 4-band
GeoTIFF tiles of 64 px with a real CRS and transform) and run through the pipeline twice:

- run A, ``dvc repro prepare``: GeoTIFF labels with the ``whdld`` tree's own values (0 = no label);
- run B, ``dvc exp run train@bhccm_hsc -S ...`` (the README's form; prepare, then one train run): PNG labels named
  ``<tile>_gt.png`` with values 10, 20, ... mapped to leaves by ``prepare.folder.mapping``, three of the four
  bands, a spatial block split.

Both runs check the manifest (band names, normalisation), the prepared labels (leaf indices on the image grid)
and that every output the prepare stage declares exists; run B also the checkpoint and the metrics JSON. Tiny
profile: one seed, 6 iterations, 64 px tiles. Every prepared dataset trains the same way (labels are rewritten
as leaf indices at prepare), so one train run covers both label formats. Then ``hierars predict`` runs the trained
model on one of run B's images (it picks bands 4-3-2 by name): per-level GeoTIFFs with the input's CRS and
transform, a ``.qml`` style per level, and the model card next to the model.

``test_full_pipeline_on_own_folder`` runs the whole pipeline, every stage, on a folder source with the README's
command (``dvc exp run -S prepare.source=folder -S prepare.root=... -S prepare.hierarchy=whdld -S train.source=folder
...``; the tiny profile is a params edit in the copy): the transfer experiments and the retrieval stage, whose data
only the synthetic source generates, skip with a reason; every declared output exists; ``dvc status`` is clean, and
editing one image under ``prepare.root`` makes ``prepare`` stale (the root is a dependency of the stage).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from folder_data import PNG_VALUES, make_folder

from hierars.project import PROJ_ROOT

BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
RUN = "bhccm_hsc"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DVC.exists() or not (BIN / "papermill").exists(),
                       reason="dvc / papermill not installed beside this python"),  # fmt: skip
]


def _kernel_installed() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return "hierars" in KernelSpecManager().find_kernel_specs()


def _copy_checkout(dst: Path, data_root: Path | None, tiny: dict | None = None) -> None:
    """Tracked and unignored files of the checkout in ``dst`` (a fresh git repository) with a tiny train profile
    (``tiny`` overrides it) in ``params.yaml``, and the folder source at ``data_root`` (None: the checkout's
    ``prepare`` section and ``train.source``)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJ_ROOT,
                         capture_output=True, check=True).stdout  # fmt: skip
    for rel in filter(None, out.decode().split("\0")):
        src = PROJ_ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    params = yaml.safe_load((PROJ_ROOT / "params.yaml").read_text())
    if data_root is not None:
        params["prepare"].update(source="folder", root=str(data_root), hierarchy="whdld")
        params["prepare"]["folder"].update(ignore=[0], tile_size=64)
        params["train"]["source"] = "folder"
    for run in params["train"]["runs"].values():  # a run's own budget or seeds would override the tiny profile
        for key in ("iterations", "eval_interval", "batch_size", "seed", "seeds", "max_val_samples"):
            run.pop(key, None)
    params["train"].update({"iterations": 6, "batch_size": 2, "eval_interval": 6, "log_interval": 1, "seeds": [0],
                            "decoder_channels": 32, "num_threads": 1, "max_val_samples": 4, **(tiny or {})})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)


def _run(repo: Path, exe: str, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH: the copy's hierars, not the editable install of the checkout; HIERARS_ROOT: the copy's files
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HIERARS_ROOT": str(repo),
           "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
    r = subprocess.run([str(BIN / exe), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{exe} {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(repo, "dvc", *args)


def _check_prepare(repo: Path, data_root: Path, bands: list[str], label_of) -> dict:
    """Outputs of the prepare stage for the folder source; returns the manifest's dataset entry."""
    processed = repo / "data" / "processed"
    spec = json.loads((processed / "manifest.json").read_text())["datasets"]["folder"]
    stats = json.loads((processed / "stats.json").read_text())["folder"]
    assert spec["bands"] == bands and spec["normalisation"]["mean"] == stats["mean"] and len(stats["std"]) == len(bands)
    assert spec["crs"] == "EPSG:32633" and spec["tree"] == "folder/tree.yaml"
    splits = json.loads((processed / "splits.json").read_text())["folder"]
    assert splits["train"] and splits["val"] and len(splits["train"]) + len(splits["val"]) <= 9
    for d in splits["train"] + splits["val"]:  # prepared labels: leaf indices on the image's grid
        img = Path(d["image"])
        assert img.parent == data_root / "image"
        with rasterio.open(processed / d["label"]) as ls, rasterio.open(img) as im:
            assert ls.transform == im.transform and ls.crs == im.crs
            got, raw = ls.read(1), label_of(img)
        assert set(np.unique(got[raw == 0]).tolist()) <= {255} and (got[raw != 0] < 6).all()
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["prepare"]
    for entry in declared.get("outs", []) + declared.get("plots", []):
        path = entry if isinstance(entry, str) else next(iter(entry))
        assert (repo / path).exists(), f"prepare declares {path} but the folder source did not write it"
    return spec


def _check_train(repo: Path) -> None:
    assert list((repo / "models" / RUN).glob("seed0/ckpt.pt"))
    metrics = json.loads((repo / "reports" / "metrics" / f"{RUN}.json").read_text())
    assert 0.0 <= metrics["mIoU_L1"] <= 1.0 and 0.0 <= metrics["mIoU_L2"] <= 1.0 and "mIoU_L2_jsps" in metrics


def _raw_tif(img: Path) -> np.ndarray:
    with rasterio.open(img.parent.parent / "label" / img.name) as ds:
        return ds.read(1)


def _raw_png(img: Path) -> np.ndarray:
    with rasterio.open(img.parent.parent / "label" / f"{img.stem}_gt.png") as ds:
        return ds.read(1)


def test_own_folder_data_through_dvc(tmp_path: Path):
    if not _kernel_installed():
        pytest.skip("jupyter kernel 'hierars' is not installed")
    a, b, repo = tmp_path / "tiles_tif", tmp_path / "tiles_png", tmp_path / "repo"
    make_folder(a, 3, 3, size=64)
    make_folder(b, 3, 3, size=64, png=True, seed=1)
    _copy_checkout(repo, a)

    # run A: GeoTIFF labels with the tree's own values, all four bands, seeded random split
    _dvc(repo, "repro", "prepare")
    spec = _check_prepare(repo, a, ["blue", "green", "red", "nir"], _raw_tif)
    assert spec["band_indexes"] is None

    # run B: PNG labels with a value mapping, bands 4-3-2, a spatial block split (2 x 2 tiles per block)
    mapping = "{" + ", ".join(f"{v}: {leaf}" for v, leaf in PNG_VALUES.items()) + "}"
    _dvc(repo, "exp", "run", f"train@{RUN}", "-S", f"prepare.root={b}", "-S", "prepare.folder.labels=label/*.png",
         "-S", "prepare.folder.label_suffix=_gt.png", "-S", f"prepare.folder.mapping={mapping}",
         "-S", "prepare.folder.bands=[4, 3, 2]", "-S", "prepare.folder.band_names=[nir, red, green]",
         "-S", "prepare.folder.split.kind=blocks", "-S", "prepare.folder.split.block_size=1280")  # fmt: skip
    spec = _check_prepare(repo, b, ["nir", "red", "green"], _raw_png)
    assert spec["band_indexes"] == [4, 3, 2]
    _check_train(repo)
    png = _raw_png(b / "image" / "t_0_0.tif")
    got = rasterio.open(repo / "data" / "processed" / "folder" / "label" / "t_0_0.tif").read(1)
    leaves = yaml.safe_load((repo / "data" / "processed" / "folder" / "tree.yaml").read_text())["label_values"]
    for v, leaf in PNG_VALUES.items():
        assert (got[png == v] == leaves[leaf][0]).all()
    status = _dvc(repo, "status", "prepare", f"train@{RUN}").stdout
    assert "changed" not in status, status  # the experiment's outputs match its params

    # hierars predict on one image of run B with the trained model
    model, image, out = repo / "models" / RUN / "seed0" / "ckpt.pt", b / "image" / "t_1_2.tif", tmp_path / "pred"
    _run(repo, "hierars", "predict", str(model), str(image), "-o", str(out), "--no-progress")
    tree = yaml.safe_load((repo / "data" / "processed" / "folder" / "tree.yaml").read_text())
    with rasterio.open(image) as im:
        crs, transform = im.crs, im.transform
    for level in (1, 2):  # whdld: 4 coarse classes, 6 leaves
        with rasterio.open(out / f"t_1_2_pred_L{level}.tif") as ds:
            assert ds.crs == crs and ds.transform == transform and ds.count == 1
            assert int(ds.read(1).max()) < (4, 6)[level - 1]
        qml = (out / f"t_1_2_pred_L{level}.qml").read_text()
        assert "paletteEntry" in qml and ("water" in qml if level == 1 else "bare_soil" in qml)
    with rasterio.open(out / "t_1_2_pred.tif") as ds:
        assert ds.crs == crs and ds.transform == transform and ds.count == 2
    card = (repo / "models" / RUN / "MODEL_CARD.md").read_text()
    assert "whdld" in card and "nir" in card, card[:500]
    assert tree["name"] == "whdld"


def _declared_outputs(repo: Path) -> list[str]:
    """Every out / metric / plot of every (expanded) stage of the copy's dvc.yaml under its params.yaml."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    items = {"train": list(params["train"]["runs"]), "transfer": list(params["transfer"]["run"])}
    outs = []
    for name, st in stages.items():
        body = st.get("do") or st
        for item in items.get(name, [None]):
            for kind in ("outs", "metrics", "plots"):
                for entry in body.get(kind, []):
                    path = str(entry if isinstance(entry, str) else next(iter(entry)))
                    outs.append(path if item is None else path.replace("${key}", item).replace("${item}", item))
    return outs


def test_full_pipeline_on_own_folder(tmp_path: Path):
    """``dvc exp run`` of every stage on the folder source: skipped stages say why, every output exists."""
    if not _kernel_installed():
        pytest.skip("jupyter kernel 'hierars' is not installed")
    data, repo = tmp_path / "tiles", tmp_path / "repo"
    make_folder(data, 2, 3, size=64)
    _copy_checkout(repo, None, tiny={"iterations": 2, "eval_interval": 2})
    declared = _declared_outputs(repo)
    for rel in declared:  # outputs the checkout committed (metrics JSON): the run must write its own
        target = repo / rel
        if target.is_file():
            target.unlink()
    # the README's command (the tiny train profile is in params.yaml); the labels' 0 is "no label"
    _dvc(repo, "exp", "run", "-S", "prepare.source=folder", "-S", f"prepare.root={data}",
         "-S", "prepare.hierarchy=whdld", "-S", "prepare.folder.ignore=[0]", "-S", "prepare.folder.tile_size=64",
         "-S", "train.source=folder")
    missing = [rel for rel in declared if not (repo / rel).exists()]
    assert not missing, f"declared outputs not written on the folder source: {missing}"
    reports = repo / "reports"
    for exp in ("s2_crop10m", "rgb_whdld"):  # the synthetic domains do not exist: skipped, with the reason
        assert json.loads((reports / "metrics" / f"transfer_{exp}.json").read_text()) == {"skipped": 1}
        status = json.loads((reports / "transfer" / exp / "status.json").read_text())
        assert status["status"] == "skipped" and "'folder'" in status["reason"], status
        assert "skipped" in (reports / "transfer" / exp / "table.md").read_text()
        assert (repo / "models" / f"transfer_{exp}" / "SKIPPED.md").is_file()
    assert "crop10m" in json.loads((reports / "transfer" / "s2_crop10m" / "status.json").read_text())["reason"]
    assert json.loads((reports / "metrics" / "retrieval.json").read_text()) == {"skipped": 1}
    text = (reports / "retrieval" / "retrieval.md").read_text()
    assert "skipped" in text and "retrieval.source=gid15" in text, text
    assert not (reports / "retrieval" / "retrieval.csv").exists()  # no rows, no table
    # the trained runs are real: their metrics are scores on the folder's tree (whdld: 2 levels)
    for run in ("flat", "bhccm_hsc", "hssn"):
        m = json.loads((reports / "metrics" / f"{run}.json").read_text())
        assert 0.0 <= m["mIoU_L2"] <= 1.0 and "mIoU_L3" not in m, (run, m)
    # the figures stage: the user's tree in the tables and maps, a `skipped: <reason>` line per skipped stage
    paper = reports / "paper"
    index = (paper / "README.md").read_text()
    assert index.count(": skipped: ") >= 3 and "fig_predictions.png" in index, index
    assert "skipped: " in (paper / "transfer_s2_crop10m.md").read_text()
    assert "skipped: " in (paper / "retrieval.md").read_text()
    main = (paper / "main.md").read_text()
    assert "L2" in main and "L3" not in main, main
    assert "tables.md" in {p.name for p in (reports / "tables").iterdir()}  # the report stage on the user's tree
    # DVC: everything up to date; an edited image under prepare.root makes prepare stale
    assert "changed" not in _dvc(repo, "status").stdout
    img = data / "image" / "t_0_0.tif"
    with rasterio.open(img, "r+") as ds:
        band = ds.read(1)
        ds.write(band + 1, 1)
    status = _dvc(repo, "status", "prepare").stdout
    assert "prepare" in status and "modified" in status and str(data) in status, status
