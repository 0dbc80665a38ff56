"""Stages that skip themselves when their data do not exist (issue 12): the transfer experiments and the retrieval
stage decide from the prepared data and their own settings, and then write every output ``dvc.yaml`` declares with
the reason (``hierars.project.skipped``); the figures stage reads the reason back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hierars.project import PROJ_ROOT
from hierars.project.retrieval_stage import effective_source, retrieval_config, retrieval_outputs
from hierars.project.retrieval_stage import skip_reason as retrieval_skip
from hierars.project.retrieval_stage import write_skipped_outputs as retrieval_write_skipped
from hierars.project.skipped import plot_skipped, skipped_reason, write_ran_status, write_skipped
from hierars.project.transfer_stage import skip_reason as transfer_skip
from hierars.project.transfer_stage import write_skipped_outputs as transfer_write_skipped

S2 = ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]


def _params(tmp_path: Path, datasets: dict[str, list[str]] | None, kind: str = "synthetic", **sections) -> dict:
    """The checkout's params.yaml with temp paths and a manifest listing ``datasets`` (name -> bands)."""
    params = yaml.safe_load((PROJ_ROOT / "params.yaml").read_text())
    params["paths"] = {k: str(tmp_path / k) for k in ("data", "models", "reports")}
    for k, v in sections.items():
        params[k] = {**params[k], **v}
    if datasets is not None:
        processed = tmp_path / "data" / "processed"
        processed.mkdir(parents=True)
        manifest = {"kind": kind, "datasets": {n: {"bands": b, "tree": "x"} for n, b in datasets.items()}}
        (processed / "manifest.json").write_text(json.dumps(manifest))
    return params


def _declared(stage: str, item: str | None) -> list[str]:
    st = yaml.safe_load((PROJ_ROOT / "dvc.yaml").read_text())["stages"][stage]
    body = st.get("do") or st
    out = []
    for kind in ("outs", "metrics", "plots"):
        for entry in body.get(kind, []):
            path = str(entry if isinstance(entry, str) else next(iter(entry)))
            out.append(path.replace("${item}", item) if item else path)
    return [p for p in out if not p.startswith("reports/notebooks/")]  # papermill writes the executed notebook


# ------------------------------------------------------------------------------------------------ the writer
def test_write_skipped_writes_status_report_metrics_figure_and_model_note(tmp_path: Path) -> None:
    out = write_skipped("transfer@x", "no crop10m here", metrics=tmp_path / "m.json", report_dir=tmp_path / "rep",
                        report_name="table.md", figures=[tmp_path / "fig.png"], model_dirs=[tmp_path / "models"])
    assert json.loads((tmp_path / "m.json").read_text()) == {"skipped": 1}
    assert skipped_reason(tmp_path / "rep") == "no crop10m here"
    assert "no crop10m here" in (tmp_path / "rep" / "table.md").read_text()
    assert "no crop10m here" in (tmp_path / "models" / "SKIPPED.md").read_text()
    with Image.open(out["figure0"]) as im:  # a real PNG, mostly white with large dark text
        assert im.size[0] > 400 and im.size[1] > 150
    write_ran_status("transfer@x", tmp_path / "rep")  # a later run that ran: no stale skip
    assert skipped_reason(tmp_path / "rep") is None
    assert skipped_reason(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="needs a reason"):
        write_skipped("s", "  ", metrics=tmp_path / "m.json", report_dir=tmp_path, report_name="r.md")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "status.json").write_text("[1]")
    with pytest.raises(ValueError, match="status.json"):
        skipped_reason(tmp_path / "bad")


def test_plot_skipped_draws_the_reason(tmp_path: Path) -> None:
    fig = plot_skipped("retrieval", "a reason " * 20, tmp_path / "f.png")
    texts = [t.get_text() for t in fig.texts]
    assert texts[0] == "retrieval: skipped" and "a reason" in texts[1] and "\n" in texts[1]  # wrapped


# ------------------------------------------------------------------------------------------------ retrieval
def test_retrieval_auto_skips_without_an_archive_and_runs_with_one(tmp_path: Path) -> None:
    params = _params(tmp_path, {"folder": ["nir", "red", "green"]}, kind="folder")
    cfg = retrieval_config(params)
    assert cfg.source == "auto" and effective_source(params, cfg) == "none"
    reason = retrieval_skip(params, cfg)
    assert "'folder'" in reason and "retrieval.source=gid15" in reason
    index = tmp_path / "data" / "processed" / "retrieval" / "index.csv"
    index.parent.mkdir()
    index.write_text("image,label\n")
    assert retrieval_skip(params, cfg) is None and effective_source(params, cfg) == "synthetic"


def test_retrieval_none_skips_and_synthetic_without_archive_is_an_error(tmp_path: Path) -> None:
    params = _params(tmp_path, {"folder": ["b"]}, kind="folder", retrieval={"source": "none"})
    assert "switched off" in retrieval_skip(params)
    params["retrieval"]["source"] = "synthetic"
    with pytest.raises(FileNotFoundError, match="retrieval.source is synthetic"):
        retrieval_skip(params)
    params["retrieval"]["source"] = "gid15"  # reads its own root: never skipped for want of prepare's archive
    assert retrieval_skip(params) is None


def test_retrieval_skip_writes_every_declared_output(tmp_path: Path) -> None:
    params = _params(tmp_path, {"folder": ["b"]}, kind="folder")
    retrieval_write_skipped(params, retrieval_skip(params))
    for rel in _declared("retrieval", None):
        assert (tmp_path / rel).exists(), rel
    assert json.loads(retrieval_outputs(params)["metrics"].read_text()) == {"skipped": 1}
    assert "retrieval.source=gid15" in skipped_reason(tmp_path / "reports" / "retrieval")


# ------------------------------------------------------------------------------------------------ transfer
def test_transfer_runs_where_its_datasets_exist(tmp_path: Path) -> None:
    params = _params(tmp_path, {"s2": S2, "crop10m": S2, "rgb": ["red", "green", "blue"],
                                "whdld": ["red", "green", "blue"]})
    assert transfer_skip(params, "s2_crop10m") is None and transfer_skip(params, "rgb_whdld") is None


def test_transfer_skips_on_a_folder_source(tmp_path: Path) -> None:
    params = _params(tmp_path, {"folder": ["nir", "red", "green"]}, kind="folder", train={"source": "folder"})
    reason = transfer_skip(params, "s2_crop10m")
    assert "target dataset 'crop10m'" in reason and "'folder'" in reason
    # the target exists but the source run's dataset does not (train.source names another dataset)
    params = _params(tmp_path / "b", {"crop10m": S2, "whdld": ["red", "green", "blue"]}, train={"source": "s2"})
    assert "source model's dataset 's2'" in transfer_skip(params, "s2_crop10m")
    assert "source dataset 'rgb'" in transfer_skip(params, "rgb_whdld")


def test_transfer_skips_when_the_bands_differ(tmp_path: Path) -> None:
    params = _params(tmp_path, {"gf2": ["blue", "green", "red", "nir"], "crop10m": S2}, train={"source": "gf2"})
    reason = transfer_skip(params, "s2_crop10m")
    assert "'gf2' bands" in reason and "B8A" in reason


def test_transfer_agnet_needs_its_root(tmp_path: Path) -> None:
    params = _params(tmp_path, None)
    params["transfer"]["experiments"]["agnet"]["root"] = str(tmp_path / "no_agnet")
    assert "no_agnet" in transfer_skip(params, "agnet")
    (tmp_path / "no_agnet").mkdir()
    assert transfer_skip(params, "agnet") is None


def test_transfer_configuration_errors_are_not_skips(tmp_path: Path) -> None:
    params = _params(tmp_path, None)
    with pytest.raises(FileNotFoundError, match="run the prepare stage"):
        transfer_skip(params, "s2_crop10m")
    with pytest.raises(ValueError, match="not in transfer.experiments"):
        transfer_skip(params, "nope")


def test_transfer_skip_writes_every_declared_output(tmp_path: Path) -> None:
    params = _params(tmp_path, {"folder": ["b"]}, kind="folder", train={"source": "folder"})
    transfer_write_skipped(params, "rgb_whdld", transfer_skip(params, "rgb_whdld"))
    for rel in _declared("transfer", "rgb_whdld"):
        assert (tmp_path / rel).exists(), rel
    assert "target dataset 'whdld'" in skipped_reason(tmp_path / "reports" / "transfer" / "rgb_whdld")


# ------------------------------------------------------------------------------------------------ prepare.root
def test_synthetic_manifest_does_not_depend_on_prepare_root(tmp_path: Path) -> None:
    """``prepare.root`` (default ``data/own``) is a DVC dependency of prepare; the synthetic source ignores it, so
    its manifest (part of the ``data/processed`` output DVC hashes) is the same bytes whatever the root says."""
    from hierars.data import prepare
    from hierars.project import prepare_config

    params = yaml.safe_load((PROJ_ROOT / "tests" / "params_smoke.yaml").read_text())
    params["prepare"].update(synthetic={"n_scenes": 2, "scene_size_m": 320, "val_every": 2},
                             crop10m={"n_scenes": 0}, whdld={"n_scenes": 0},
                             retrieval={"per_class": 0, "per_density": 0})
    manifests = []
    for k, root in enumerate((None, "data/own", str(tmp_path / "elsewhere"))):
        params["prepare"]["root"] = root
        prepare(prepare_config(params), tmp_path / str(k))
        manifests.append((tmp_path / str(k) / "manifest.json").read_bytes())
    assert manifests[0] == manifests[1] == manifests[2]
    assert json.loads(manifests[0])["config"]["root"] is None
