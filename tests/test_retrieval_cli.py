"""``hierars index`` / ``hierars search`` end to end on tiny GeoTIFFs (tiny segmenter and TKANet)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from hierars import Hierarchy
from hierars.project.cli import build_parser, main
from hierars.retrieval import TKANet, save_tkanet
from hierars.training import TrainConfig, build_run_model, run_metadata, save_checkpoint

SIZE = 64


def write_tif(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=SIZE, width=SIZE, count=data.shape[0], dtype="float32",
                       crs="EPSG:32649", transform=from_origin(0, 0, 2.0, 2.0)) as ds:
        ds.write(data.astype(np.float32))
    return path


class _Stats:
    """What run_metadata reads from a training dataset: the bands' normalisation (raw RGB around 100 ± 60)."""

    mean, std, band_names = [100.0] * 3, [60.0] * 3, ["red", "green", "blue"]

    def __len__(self) -> int:
        return 6


def segmenter_ckpt(path, h, seed):
    """A tiny segmenter saved the way the training loop saves (``fit``'s keys + the self-contained metadata)."""
    cfg = TrainConfig(arch="fpn", encoder="tu-resnet18", head="bhccm", decoder_channels=32, source="rgb")
    torch.manual_seed(seed)
    model = build_run_model(cfg, h, 3)
    save_checkpoint(path, {"model": model.state_dict(), "iteration": 1, "config": cfg.model_dump(),
                           "hierarchy": {"name": h.name, "num_classes": list(h.num_classes)},
                           **run_metadata(cfg, h, 3, _Stats())})
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    h = Hierarchy.builtin("whdld")
    rng = np.random.default_rng(0)
    images = []
    for scene in ("forest", "urban"):
        for i in range(3):
            base = rng.random((3, SIZE, SIZE)) * 50 + (150 if scene == "urban" else 20)
            images.append(write_tif(tmp / "archive" / scene / f"{i}.tif", base))
    torch.manual_seed(0)
    tk = TKANet(3, widths=(8, 8, 16, 16, 16))
    tk.set_normalization([100.0] * 3, [60.0] * 3)
    stats = tmp / "stats.json"
    stats.write_text(json.dumps({"rgb": {"mean": [100.0] * 3, "std": [60.0] * 3}}))
    return {"tmp": tmp, "h": h, "images": images, "seg": segmenter_ckpt(tmp / "seg.pt", h, 0),
            "tk": save_tkanet(tmp / "tk.pt", tk), "stats": stats,
            "query": write_tif(tmp / "q.tif", rng.random((3, SIZE, SIZE)) * 50 + 150)}


def build(setup, out, *extra):
    return main(["index", str(setup["tmp"] / "archive"), "--model", str(setup["seg"]), "--embedder", str(setup["tk"]),
                 "-o", str(out), "--stats", str(setup["stats"]), "--no-progress", *extra])


def test_index_then_search_prints_ranked_files(setup, capsys):
    out = setup["tmp"] / "archive.hirx"
    assert build(setup, out) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["search", str(out), str(setup["query"]), "-k", "3", "-K", "5", "--weight", "building=4"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert len(lines) == 3 and "rank" in text and ".tif" in lines[0]
    assert main(["search", str(out), str(setup["query"]), "-k", "6", "--method", "cbir", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    rows = res[0]["results"]
    assert [r["rank"] for r in rows] == list(range(1, 7))
    d = [r["distance"] for r in rows]
    assert d == sorted(d) and {r["label"] for r in rows} == {"forest", "urban"}
    assert sorted(r["file"] for r in rows) == sorted(str(p.resolve()) for p in setup["images"])


def test_cli_bad_inputs(setup, tmp_path, capsys):
    out = tmp_path / "a.hirx"
    assert build(setup, out, "--ivf", "2", "--nprobe", "2") == 0
    capsys.readouterr()
    q4 = write_tif(tmp_path / "q4.tif", np.zeros((4, SIZE, SIZE)))
    assert main(["search", str(out), str(q4), "-k", "3"]) == 2
    assert "query has 4 bands but the archive images have 3" in capsys.readouterr().err
    assert main(["search", str(out), str(setup["query"]), "-k", "7"]) == 2
    assert "k=7 is larger than the archive (6 images)" in capsys.readouterr().err
    other = segmenter_ckpt(tmp_path / "other.pt", setup["h"], 1)
    assert main(["search", str(out), str(setup["query"]), "-k", "3", "--model", str(other)]) == 2
    assert "built with segmenter" in capsys.readouterr().err
    assert main(["search", str(out), str(setup["query"]), "-k", "3", "--level", "1", "--weight", "nope=2"]) == 2
    assert "unknown class 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["index", str(empty), "--model", str(setup["seg"]), "--embedder", str(setup["tk"]), "-o",
                 str(tmp_path / "e.hirx")]) == 2
    assert "no .tif images" in capsys.readouterr().err


def test_index_normalises_as_the_checkpoint_says_and_refuses_old_checkpoints(setup, tmp_path, capsys):
    from hierars.retrieval import ArchiveIndex

    common = ["--embedder", str(setup["tk"]), "--no-progress"]
    out = tmp_path / "n.hirx"
    assert main(["index", str(setup["tmp"] / "archive"), "--model", str(setup["seg"]), "-o", str(out), *common]) == 0
    assert "the checkpoint's" in capsys.readouterr().err
    assert ArchiveIndex.load(out).meta["seg_mean"] == [100.0] * 3  # stored with the model, no --stats needed
    old = tmp_path / "old.pt"
    save_checkpoint(old, {"model": {}, "iteration": 1, "config": {}, "hierarchy": {"name": "whdld"}})
    assert main(["index", str(setup["tmp"] / "archive"), "--model", str(old), "-o", str(tmp_path / "o.hirx"),
                 *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "old.pt" in err and "tree definition" in err and "normalisation" in err and len(err.splitlines()) == 1


def test_parser_has_index_and_search():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"index", "search"} <= set(sub.choices)
