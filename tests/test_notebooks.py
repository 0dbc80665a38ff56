"""Smoke-execute every pipeline notebook (notebooks/NN_*.ipynb) with papermill, in pipeline order.

Uses the tiny profile ``tests/params_smoke.yaml`` (or ``$HIERARS_SMOKE_PARAMS``) copied into a temp folder with
``paths`` (data, models, reports) rewritten to temp dirs, so nothing in the checkout is touched. A notebook
that declares a ``run`` parameter (02_train) is executed once per entry of the profile's ``train.runs``.
Kernel: ``hierars``. Executed copies land in the temp reports folder for inspection on failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from test_pipeline_decl import check_stage_reads, with_record_cell

from hierars.project import PROJ_ROOT
from hierars.project.params import TRACK_ENV

papermill = pytest.importorskip("papermill")

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted((PROJ_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMOKE = Path(os.environ.get("HIERARS_SMOKE_PARAMS", PROJ_ROOT / "tests" / "params_smoke.yaml"))
KERNEL = "hierars"

_failed: list[str] = []


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The smoke params file with temp ``paths``, shared by all notebooks of one pipeline run."""
    if not SMOKE.is_file():
        pytest.skip(f"smoke profile not found: {SMOKE}")
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.skip(f"jupyter kernel {KERNEL!r} is not installed")
    root = tmp_path_factory.mktemp("pipeline")
    params = yaml.safe_load(SMOKE.read_text()) or {}
    params["paths"] = {k: str(root / k) for k in ("data", "models", "reports")}
    params_file = root / "params_smoke.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return {"root": root, "params": params, "params_file": params_file}


def _execute(nb: Path, pipeline: dict, **extra) -> Path:
    """Run ``nb`` with a last cell recording what it read (``<out>.reads.json``, see tests/test_pipeline_decl.py)."""
    out_dir = pipeline["root"] / "reports" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "".join(f"_{v}" for v in extra.values())
    out = out_dir / f"{nb.stem}{suffix}.ipynb"
    recording = with_record_cell(nb, pipeline["root"] / "recording", out.with_suffix(".reads.json"))
    os.environ[TRACK_ENV] = "1"  # the kernel inherits it: load_params records the keys read
    try:
        papermill.execute_notebook(
            str(recording),
            str(out),
            kernel_name=KERNEL,
            cwd=str(nb.parent),
            progress_bar=False,
            parameters={"params_file": str(pipeline["params_file"]), **extra},
        )
    finally:
        os.environ.pop(TRACK_ENV, None)
    return out


def _check_outputs(nb: Path, pipeline: dict, run: str | None) -> None:
    """Outputs the stage promises (for the notebooks whose contract is fixed here)."""
    paths = pipeline["params"]["paths"]
    reports, models = Path(paths["reports"]), Path(paths["models"])
    if nb.stem == "02_train":
        metrics = json.loads((reports / "metrics" / f"{run}.json").read_text())
        levels = len([k for k in metrics if k.startswith("mIoU_L") and k[6:].isdigit()])
        assert levels >= 2, metrics
        assert all(0.0 <= metrics[f"mIoU_L{lvl}"] <= 1.0 for lvl in range(1, levels + 1))
        assert f"mIoU_L{levels}_jsps" in metrics and "consistency" in metrics
        assert list((models / run).glob("seed*/ckpt.pt")), f"no checkpoint under {models / run}"
        assert (reports / "plots" / f"{run}_curve.csv").is_file()
        assert (reports / "figures" / f"{run}_predictions.png").is_file()
    if nb.stem == "04_transfer":
        metrics = json.loads((reports / "metrics" / f"transfer_{run}.json").read_text())
        variants = pipeline["params"]["transfer"]["variants"]
        finest = max(int(k.split("_L")[1]) for k in metrics if k.startswith(f"{variants[0]}_mIoU_L") and
                     k.split("_L")[1].isdigit())
        for v in variants:
            assert 0.0 <= metrics[f"{v}_mIoU_L{finest}"] <= 1.0, metrics
        assert "translu_vs_finetune_L1" in metrics, sorted(metrics)
        assert (reports / "transfer" / run / "table.md").is_file()
        assert (reports / "figures" / f"transfer_{run}_predictions.png").is_file()
        assert list((models / f"transfer_{run}").glob("*/seed*/ckpt.pt"))
    if nb.stem == "03_report":
        text = (reports / "tables" / "tables.md").read_text()
        assert "L3 mIoU" in text or "L2 mIoU" in text, text[:500]
        assert (reports / "tables" / "main_jsps.csv").is_file()
    if nb.stem == "05_retrieval":
        metrics = json.loads((reports / "metrics" / "retrieval.json").read_text())
        assert "tableIV_CBIR_P@2" in metrics and "tableIV_HIR_K4_w1_mAP@2" in metrics, sorted(metrics)[:20]
        assert all(v is None or 0.0 <= v <= 1.0 for k, v in metrics.items() if "@" in k)
        assert "Table IV" in (reports / "retrieval" / "retrieval.md").read_text()
        assert (reports / "retrieval" / "retrieval.csv").is_file()
        assert (reports / "figures" / "retrieval_gallery.png").is_file()
        assert {p.name for p in (models / "retrieval").iterdir()} >= {"segmenter", "tkanet.pt", "index.npz"}
    if nb.stem == "07_figures":
        import pandas as pd

        paper = reports / "paper"
        main = pd.read_csv(paper / "main.csv")
        assert {"flat", "bhccm_hsc", "hssn"} <= {s.split("/")[-1][:-5] for s in main["source"]}, main
        assert main["L1"].between(0, 1).all() and "Source:" in (paper / "main.md").read_text()
        for exp in pipeline["params"]["transfer"]["run"]:
            assert "mIoU (%)" in (paper / f"transfer_{exp}.md").read_text()
        assert (paper / "retrieval_tableIV.csv").is_file() and (paper / "complexity.csv").is_file()
        for fig in ("fig_main", "fig_transfer", "fig_retrieval", "fig_predictions"):
            assert (paper / f"{fig}.png").stat().st_size > 10_000, fig
        assert "fig_predictions.png" in (paper / "README.md").read_text()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(nb: Path, pipeline: dict) -> None:
    if _failed:
        pytest.skip(f"an earlier pipeline notebook failed: {_failed}")
    try:
        declared = papermill.inspect_notebook(str(nb))
        if "params_file" not in declared:
            raise AssertionError(f"{nb.name}: its `parameters` cell must define params_file")
        # a notebook run once per item: 02_train per train.runs entry, 04_transfer per transfer.run experiment
        key, runs = None, [None]
        if "run" in declared:
            key, runs = "run", list((pipeline["params"].get("train") or {}).get("runs") or {})
        elif "experiment" in declared:
            key, runs = "experiment", list((pipeline["params"].get("transfer") or {}).get("run") or [])
        if not runs:
            raise AssertionError(f"{nb.name} takes `{key}` but the smoke profile lists none")
        for run in runs:
            out = _execute(nb, pipeline, **({key: run} if run is not None else {}))
            _check_outputs(nb, pipeline, run)
            check_stage_reads(nb.stem, run, json.loads(out.with_suffix(".reads.json").read_text()))
    except BaseException:
        _failed.append(nb.stem)
        raise


def test_committed_notebooks_carry_no_outputs() -> None:
    import nbformat

    for nb in NOTEBOOKS:
        book = nbformat.read(nb, as_version=4)
        assert book.metadata.get("kernelspec", {}).get("name") == KERNEL, nb.name
        for cell in book.cells:
            if cell.cell_type == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, (
                    f"{nb.name} has outputs"
                )
        tagged = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name}: needs exactly one cell tagged `parameters`"


def test_real_data_pipeline_gid15(shared_data: Path, tmp_path: Path) -> None:
    """The same prepare + train notebooks on real imagery (GID-15 read in place), a tiny budget."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.skip(f"jupyter kernel {KERNEL!r} is not installed")
    params = yaml.safe_load(SMOKE.read_text())
    params["paths"] = {k: str(tmp_path / k) for k in ("data", "models", "reports")}
    params["prepare"] = {"source": "gid15", "root": str(shared_data / "gid15")}
    params["train"].update(
        source="gid15",
        iterations=2,
        max_train_samples=8,
        runs={"bhccm_hsc": params["train"]["runs"]["bhccm_hsc"]},
    )
    params_file = tmp_path / "params_gid15.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline = {"root": tmp_path, "params": params, "params_file": params_file}
    _execute(PROJ_ROOT / "notebooks" / "01_prepare.ipynb", pipeline)
    splits = json.loads((tmp_path / "data" / "processed" / "splits.json").read_text())["gid15"]
    assert len(splits["train"]) + len(splits["val"]) == 767
    _execute(PROJ_ROOT / "notebooks" / "02_train.ipynb", pipeline, run="bhccm_hsc")
    _check_outputs(PROJ_ROOT / "notebooks" / "02_train.ipynb", pipeline, "bhccm_hsc")
    metrics = json.loads((tmp_path / "reports" / "metrics" / "bhccm_hsc.json").read_text())
    assert "mIoU_L3_jsps" in metrics and metrics["consistency_jsps"] == pytest.approx(1.0)


def test_kernel_imports_this_checkout() -> None:
    """The ``hierars`` kernel (installed by scripts/setup.sh into .venv with ``--sys-prefix``) runs .venv's python,
    where hierars is installed editable from this checkout: a notebook never imports another checkout's copy."""
    import subprocess

    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if KERNEL not in specs:
        pytest.skip(f"jupyter kernel {KERNEL!r} is not installed")
    argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
    out = subprocess.run([argv[0], "-c", "import hierars; print(hierars.__file__)"], cwd="/", capture_output=True,
                         text=True, check=True).stdout.strip()
    assert Path(out).resolve().parent == (PROJ_ROOT / "hierars").resolve(), (
        f"kernel {KERNEL!r} ({argv[0]}) imports hierars from {out}, not from this checkout; re-run scripts/setup.sh")
