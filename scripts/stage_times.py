"""Run the DVC pipeline stage by stage and time each one (issue 15's per-stage table).

Each stage of ``dvc stage list`` (dvc.yaml order, which is the pipeline's order) is reproduced on its own with
``dvc repro --single-item <stage>`` (an up-to-date stage is skipped by DVC in about a second), then a whole no-op
``dvc repro`` is timed. Writes ``reports/benchmarks/stage_times.json`` and prints a Markdown table for the README.
Wall times depend on the machine's load: the table records the machine (cores) and the load average at the start.

With ``--from-notebooks`` nothing is run: the per-stage times are read from the executed notebooks that a plain
``dvc repro`` left in ``reports/notebooks/`` (papermill records each notebook's start, end and duration), so the
table describes the README's own command; a no-op ``dvc repro`` is then timed.

Usage (from the repository root; this is also the way to run the whole pipeline with a time table)::

    .venv/bin/python scripts/stage_times.py            # reproduce what is stale, time every stage
    .venv/bin/python scripts/stage_times.py --force    # re-run every stage (a from-scratch timing)
    time dvc repro && .venv/bin/python scripts/stage_times.py --from-notebooks   # time the plain command
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
    ap.add_argument("--from-notebooks", action="store_true",
                    help="run nothing: read each stage's time from reports/notebooks/ (after a plain dvc repro)")
    args = ap.parse_args(argv)
    if args.from_notebooks:
        _from_notebooks(ROOT / args.out)
        return
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
    _write_and_print(ROOT / args.out, result, times,
                     [f"| **total** | **{sum(times.values()) / 60:.1f} min** |", f"| no-op `dvc repro` | {noop:.1f} s |"])


def _stage_of(notebook: Path) -> str:
    """``02_train_flat.ipynb`` -> ``train@flat``; ``01_prepare.ipynb`` -> ``prepare`` (dvc.yaml's stage names)."""
    name = notebook.stem.split("_", 1)[1]
    for stage in ("train", "transfer"):
        if name.startswith(stage + "_"):
            return f"{stage}@{name[len(stage) + 1:]}"
    return name


def _from_notebooks(out: Path) -> None:
    rows = []
    for nb in sorted((ROOT / "reports" / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(nb.read_text()).get("metadata", {}).get("papermill", {})
        if meta.get("duration") is None:
            print(f"skipped {nb.name}: no papermill duration (not executed by papermill?)", file=sys.stderr)
            continue
        rows.append((meta["start_time"], _stage_of(nb), float(meta["duration"]), meta["end_time"]))
    if not rows:
        raise SystemExit("no executed notebooks in reports/notebooks/: run dvc repro first")
    rows.sort()
    times = {stage: d for _, stage, d, _ in rows}
    span = _seconds_between(rows[0][0], max(r[3] for r in rows))
    load = os.getloadavg()[0]
    noop = _dvc("repro")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1min_at_end": load},
              "source": "papermill durations of reports/notebooks/*.ipynb", "stages_s": times,
              "total_s": sum(times.values()), "first_start_to_last_end_s": span, "noop_repro_s": noop}
    _write_and_print(out, result, times, [f"| **sum of stages** | **{sum(times.values()) / 60:.1f} min** |",
                                          f"| first start to last end | {span / 60:.1f} min |",
                                          f"| no-op `dvc repro` | {noop:.1f} s |"])


def _write_and_print(out: Path, result: dict, times: dict[str, float], footer: list[str]) -> None:
    """Write ``result`` as JSON to ``out`` (temp file + rename) and print the per-stage Markdown table + ``footer``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print("\n| stage | wall time |\n|---|---|")
    for stage, t in times.items():
        print(f"| {stage} | {t / 60:.1f} min |" if t >= 60 else f"| {stage} | {t:.0f} s |")
    print("\n".join(footer))


def _seconds_between(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


if __name__ == "__main__":
    main()
