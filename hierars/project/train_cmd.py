"""``hierars train``: train one named run of ``params.yaml`` (every seed), in one process or under ``torchrun``.

::

    hierars train RUN [--params params.yaml] [--no-resume]      # e.g. RUN = bhccm_hsc
    torchrun --nproc_per_node=2 --no-python hierars train bhccm_hsc              # DDP, 2 processes on one node

It does what the ``train@<run>`` stage's notebook does (:func:`hierars.training.train_run` on the run's datasets,
outputs under ``paths.models`` / ``paths.reports``), without the figures. Under ``torchrun``, ``batch_size`` is
per process and the global batch is ``batch_size × nproc``; see :mod:`hierars.training.distributed`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

__all__ = ["add_train", "cmd_train"]


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a named run of params.yaml (every seed); works under torchrun",
                       description="Train train.runs[RUN] of a params file for each of its seeds and aggregate. "
                                   "Launch with `torchrun --nproc_per_node=N --no-python hierars train ...` "
                                   "for DistributedDataParallel (batch_size is per process).")
    p.add_argument("run", metavar="RUN", help="a key of train.runs")
    p.add_argument("--params", default="params.yaml", help="params file (relative to the repository root)")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints and start again")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from hierars.project.params import load_params, stage_paths
    from hierars.project.stages import build_run_datasets
    from hierars.training import distributed, resolve_run, train_run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    if "train" not in params:
        raise ValueError(f"{args.params} has no 'train' section")
    cfg = resolve_run(params["train"], args.run)
    paths = stage_paths(params)
    train_ds, val_ds, tree = build_run_datasets(params, cfg)
    try:
        result = train_run(args.run, cfg, tree, train_ds, val_ds, models_dir=paths["models"],
                           reports_dir=paths["reports"], resume=not args.no_resume)
        if distributed.is_main():
            agg = {k: round(v, 4) for k, v in result["aggregate"].items()
                   if k.startswith(("mIoU", "consistency")) and not k.endswith("_hr")}
            print(json.dumps({"run": args.run, "world_size": distributed.current().world_size,
                              "ckpts": [str(c) for c in result["ckpts"]], **agg}, indent=1), file=sys.stdout)
    finally:
        distributed.cleanup()
    return 0
