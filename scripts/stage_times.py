"""Run the DVC pipeline stage by stage and time each one (issue 15's per-stage table).

Each stage of ``dvc stage list`` (dvc.yaml order, which is the pipeline's order) is reproduced on its own with
``dvc repro --single-item <stage>`` (an up-to-date stage is skipped by DVC in about a second), then a whole no-op
``dvc repro`` is timed. Writes ``reports/benchmarks/stage_times.json`` and prints a Markdown table for the README.
Wall times depend on the machine's load: the table records the machine (cores) and the load average at the start.

Usage (from the repository root; this is also the way to run the whole pipeline with a time table)::

    .venv/bin/python scripts/stage_times.py            # reproduce what is stale, time every stage
    .venv/bin/python scripts/stage_times.py --force    # re-run every stage (a from-scratch timing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DVC = str(Path(sys.executable).parent / "dvc")


def _dvc(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([DVC, *args], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--force", action="store_true", help="re-run every stage even if it is up to date")
    ap.add_argument("--out", default="reports/benchmarks/stage_times.json")
    args = ap.parse_args(argv)
    stages = subprocess.run([DVC, "stage", "list", "--name-only"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout.split()
    load = os.getloadavg()[0]
    times: dict[str, float] = {}
    for stage in stages:
        print(f"== {stage}", flush=True)
        times[stage] = _dvc("repro", "--single-item", *(["--force"] if args.force else []), stage)
    noop = _dvc("repro")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1min_at_start": load},
              "forced": args.force, "stages_s": times, "total_s": sum(times.values()), "noop_repro_s": noop}
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print("\n| stage | wall time |\n|---|---|")
    for stage, t in times.items():
        print(f"| {stage} | {t / 60:.1f} min |" if t >= 60 else f"| {stage} | {t:.0f} s |")
    print(f"| **total** | **{sum(times.values()) / 60:.1f} min** |\n| no-op `dvc repro` | {noop:.1f} s |")


if __name__ == "__main__":
    main()
