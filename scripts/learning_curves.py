"""Learning curves to convergence (issue 14): train runs of ``params.yaml`` at a longer budget, every seed.

Each run keeps its settings from ``params.yaml`` except the budget (``--iterations``, ``--eval-interval``) and
the seeds; curves (per seed, validation mIoU per level with argmax and JSPS) land in
``reports/fidelity/<profile>/plots/<run>_seed<k>_curve.csv`` and the final metrics in
``.../metrics/<run>_seed<k>.json``. Each model, as soon as it is trained (``--analyse-only``: every model found,
again), has its validation metrics, per-class IoU, error structure (``HierarchicalMetrics.error_structure``), the
mIoU under other conventions and a bootstrap interval over validation images written to ``.../errors/``. A (run,
seed) whose results are committed there is not trained again, so a study can be spread over several sessions. The
models go to ``models/fidelity/<profile>/`` (not tracked). ``notebooks/06_fidelity.ipynb`` plots the studies
named in ``fidelity.profiles``; to show a new one, add it there and its folder to the ``fidelity`` stage's deps
in ``dvc.yaml`` (``tests/test_pipeline_decl.py`` checks that the two agree).

Usage (from the repository root)::

    .venv/bin/python scripts/learning_curves.py --profile default --runs flat bhccm_hsc hssn \\
        --iterations 1200 --eval-interval 100 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hierars.atomic import atomic_write_json
from hierars.decoding import predict_levels
from hierars.levels import as_level_list, upsample_logits
from hierars.metrics import HierarchicalMetrics, bootstrap_miou, miou_conventions
from hierars.project import PROJ_ROOT, build_run_datasets, load_params
from hierars.training import load_run_model, resolve_run, train_run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="default", help="name of the output folder under reports/fidelity/")
    ap.add_argument("--runs", nargs="+", default=["flat", "bhccm_hsc", "hssn"])
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--eval-interval", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--analyse-only", action="store_true",
                    help="skip training; write the error analysis of every trained (run, seed) found")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="extra train-section overrides, e.g. source=\\\"gf2\\\" decoder_channels=256")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = {"iterations": args.iterations, "eval_interval": args.eval_interval, "seeds": args.seeds,
             "num_threads": args.threads}
    for item in args.set:
        key, _, value = item.partition("=")
        train[key] = json.loads(value)
    params = load_params(PROJ_ROOT / args.params, {"train": train})
    out_reports = PROJ_ROOT / "reports" / "fidelity" / args.profile
    out_models = PROJ_ROOT / "models" / "fidelity" / args.profile
    # Seeds outer, runs inner: an interrupted or time-boxed job still has every run at the first seeds. A
    # (run, seed) trains unless its model's metrics.json exists (this checkout trained it) or its committed results
    # do (reports/.../metrics and errors: a study spread over several sessions or machines, whose models/ folder
    # is not kept), so re-running the same command continues the job. Each model is analysed as soon as it exists,
    # so that its error analysis is written before its models/ folder can be lost; --analyse-only redoes it.
    for seed in args.seeds:
        for run in args.runs:
            ckpt = out_models / run / f"seed{seed}" / "ckpt.pt"
            errors = out_reports / "errors" / f"{run}_seed{seed}.json"
            reported = (out_reports / "metrics" / f"{run}_seed{seed}.json").is_file() and errors.is_file()
            trained_here = (out_models / run / f"seed{seed}" / "metrics.json").is_file()
            train_now = not (args.analyse_only or trained_here or reported)
            if train_now:
                cfg = resolve_run(params["train"], run).model_copy(update={"seeds": [seed]})
                train_ds, val_ds, h = build_run_datasets(params, cfg)
                t0 = time.perf_counter()
                res = train_run(run, cfg, h, train_ds, val_ds, models_dir=out_models, reports_dir=out_reports,
                                report_name=f"{run}_seed{seed}")
                m = res["per_seed"][0]
                print(f"{run} seed {seed}: {time.perf_counter() - t0:.0f} s; " + ", ".join(
                    f"L{lv} {m.get(f'mIoU_L{lv}_jsps', m.get(f'mIoU_L{lv}')):.4f}" for lv in (3, 2, 1)), flush=True)
                ckpt = res["ckpts"][0]
            if ckpt.is_file() and (train_now or args.analyse_only or not errors.is_file()):
                analyse(params, run, seed, ckpt, errors)


def analyse(params: dict, run: str, seed: int, ckpt: Path, out: Path) -> None:
    """Per-level validation metrics (JSPS; argmax for a flat model) of a trained model, with per-class IoU, its
    error structure, the mIoU under two other conventions in use (``hierars.metrics.miou_conventions``) and a
    bootstrap interval over validation images (``hierars.metrics.bootstrap_miou``)."""
    cfg = resolve_run(params["train"], run)
    _, val_ds, h = build_run_datasets(params, cfg)
    model = load_run_model(ckpt, h, int(val_ds[0]["image"].shape[0]))
    meter = HierarchicalMetrics(h)
    per_image: list[list[np.ndarray]] = [[] for _ in h.num_classes]  # level -> one confusion per image
    mode = "argmax" if cfg.head == "flat" else "jsps"
    with torch.no_grad():
        for i in range(len(val_ds)):
            sample = val_ds[i]
            logits = upsample_logits(as_level_list(model(sample["image"][None])), tuple(sample["mask"].shape[-2:]))
            pred = predict_levels(logits, h, mode=mode)
            meter.update(pred, sample["mask"][None])
            one = HierarchicalMetrics(h)
            one.update(pred, sample["mask"][None])
            for lv, cm in enumerate(one.confusion):
                per_image[lv].append(cm.numpy())
    result = {"run": run, "seed": seed, "mode": mode, "val_images": len(val_ds), **meter.to_flat_dict(per_class=True),
              **{f"L{lv + 1}_{k}": v for lv in range(1, h.num_levels) for k, v in meter.error_structure(lv).items()}}
    for lv, cms in enumerate(per_image):
        stack = np.stack(cms)
        for name, value in miou_conventions(stack).items():
            result[f"mIoU_L{lv + 1}_{name}"] = value
        result[f"mIoU_L{lv + 1}_boot_lo"], result[f"mIoU_L{lv + 1}_boot_hi"] = bootstrap_miou(stack, seed=seed)
    atomic_write_json(out, result)
    leaf = h.num_levels
    print(f"{run} seed {seed}: L{leaf} mIoU {result[f'mIoU_L{leaf}']:.3f} (bootstrap over images "
          f"[{result[f'mIoU_L{leaf}_boot_lo']:.3f}, {result[f'mIoU_L{leaf}_boot_hi']:.3f}]; classes present "
          f"{result[f'mIoU_L{leaf}_present']:.3f}; per image {result[f'mIoU_L{leaf}_per_image']:.3f}); leaf errors "
          f"within parent {result[f'L{leaf}_within_L{leaf - 1}']:.3f} "
          f"(chance {result[f'L{leaf}_chance_L{leaf - 1}']:.3f})", flush=True)


if __name__ == "__main__":
    main()
