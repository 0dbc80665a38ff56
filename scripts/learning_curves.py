"""Learning curves to convergence (issue 14): train runs of ``params.yaml`` at a longer budget, every seed.

Each run keeps its settings from ``params.yaml`` except the budget (``--iterations``, ``--eval-interval``) and
the seeds; curves (per seed, validation mIoU per level with argmax and JSPS) land in
``reports/fidelity/<profile>/plots/<run>_seed<k>_curve.csv`` and the final metrics in
``.../metrics/<run>_seed<k>.json``. The
models go to ``models/fidelity/<profile>/`` (not tracked). ``notebooks/06_fidelity.ipynb`` plots them.

Usage (from the repository root)::

    .venv/bin/python scripts/learning_curves.py --profile default --runs flat bhccm_hsc hssn \\
        --iterations 1200 --eval-interval 100 --seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hierars.project import PROJ_ROOT, build_run_datasets, load_params
from hierars.training import resolve_run, train_run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="default", help="name of the output folder under reports/fidelity/")
    ap.add_argument("--runs", nargs="+", default=["flat", "bhccm_hsc", "hssn"])
    ap.add_argument("--iterations", type=int, default=1200)
    ap.add_argument("--eval-interval", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
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
    # seeds outer, runs inner: an interrupted or time-boxed job still has every run at the first seeds; a
    # (run, seed) whose metrics.json exists is skipped, so re-running the same command continues the job
    for seed in args.seeds:
        for run in args.runs:
            if (out_models / run / f"seed{seed}" / "metrics.json").is_file():
                continue
            cfg = resolve_run(params["train"], run).model_copy(update={"seeds": [seed]})
            train_ds, val_ds, h = build_run_datasets(params, cfg)
            t0 = time.perf_counter()
            res = train_run(run, cfg, h, train_ds, val_ds, models_dir=out_models, reports_dir=out_reports,
                            report_name=f"{run}_seed{seed}")
            m = res["per_seed"][0]
            print(f"{run} seed {seed}: {time.perf_counter() - t0:.0f} s; " + ", ".join(
                f"L{lv} {m.get(f'mIoU_L{lv}_jsps', m.get(f'mIoU_L{lv}')):.4f}" for lv in (3, 2, 1)), flush=True)

if __name__ == "__main__":
    main()
