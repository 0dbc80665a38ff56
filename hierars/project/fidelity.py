"""The fidelity study (issue 14, ``notebooks/06_fidelity.ipynb``): learning curves to convergence, the paired
comparison with the flat model, and the error structure, read from ``reports/fidelity/<profile>/``.

``scripts/learning_curves.py`` writes the data (one training per run and seed; minutes to hours on a CPU), so
the notebook only reads small committed files:

    reports/fidelity/<profile>/plots/<run>_seed<k>_curve.csv   validation mIoU per level over iterations
    reports/fidelity/<profile>/errors/<run>_seed<k>.json       final metrics + HierarchicalMetrics.error_structure

Every comparison is paired by seed (:func:`hierars.comparison.paired_by_seed`, 95 % t interval).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from hierars.comparison import paired_by_seed

__all__ = ["FidelitySection", "load_curves", "load_errors", "final_table", "budget_table", "budget_ladder",
           "ladder_finals", "metric_name", "pool_curves", "split_analysed", "evaluation_table", "per_class_table"]


class FidelitySection(BaseModel):
    """The ``fidelity`` section of ``params.yaml`` (notebook 06 reads the study; it trains nothing)."""

    model_config = ConfigDict(extra="forbid")

    folder: str = Field("reports/fidelity", description="where scripts/learning_curves.py wrote the study (from "
                        "the repository root; committed, so the notebook runs on a fresh clone)")
    profiles: list[str] = Field(["default", "default_rep", "default_rep2", "default_480", "gid15", "gid15_840",
                                 "gid15_1680", "gid15_3360", "gid15_6720", "gid15_13440", "gid15_256_noaug"],
                                min_length=1, description="studies to show, each a sub-folder "
                                "of `folder` (scripts/learning_curves.py --profile); a missing one is reported and "
                                "skipped")
    budget_profile: str = Field("default", description="the study trained on the pipeline's default data (synthetic "
                                "S2 tiles), paired with the pipeline's own runs by the budget check")
    ladders: list[list[str]] = Field([["pipeline", "default_480", "default"],
                                      ["gid15", "gid15_840", "gid15_1680", "gid15_3360", "gid15_6720",
                                       "gid15_13440"]],
                                     description="studies of one recipe at increasing budgets (each schedule annealed "
                                     "at its own end), shortest first, for the budget ladder (what a longer budget "
                                     "buys); `pipeline` is the train stage's own runs (only when it trained on the "
                                     "synthetic S2 tiles); a missing study is skipped")
    pools: dict[str, list[str]] = Field({"default+default_rep": ["default", "default_rep"],
                                         "default+default_rep+default_rep2": ["default", "default_rep",
                                                                              "default_rep2"]},
                                        description="independent samples of one recipe (studies with the same "
                                        "budget and disjoint seeds) whose final models are also shown pooled, "
                                        "name: studies; a summary across samples, not a test declared in advance; "
                                        "a pool with a missing study is skipped")
    runs: list[str] = Field(["flat", "bhccm_hsc", "hssn"], min_length=1, description="runs to compare")
    baseline: str = Field("flat", description="run the others are compared with (paired by seed)")

_CURVE = re.compile(r"^(?P<run>.+)_seed(?P<seed>\d+)_curve\.csv$")


def metric_name(level: int) -> str:
    """The curve column compared at ``level`` (1-based): JSPS decoding (a flat model's JSPS = its lifted argmax)."""
    return f"val_mIoU_L{level}_jsps"


def load_curves(folder: str | Path, runs: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``{run: DataFrame}`` of every ``<run>_seed<k>_curve.csv`` under ``folder/plots`` (a ``seed`` column added),
    in ``runs`` order; runs without any curve are left out.

    Raises:
        FileNotFoundError: ``folder/plots`` does not exist (the message gives the command that makes it).
    """
    plots = Path(folder) / "plots"
    if not plots.is_dir():
        raise FileNotFoundError(f"{plots} does not exist: run scripts/learning_curves.py first (see its --help)")
    frames: dict[str, list[pd.DataFrame]] = {}
    for path in sorted(plots.glob("*_seed*_curve.csv")):
        m = _CURVE.match(path.name)
        if m and m["run"] in runs:
            df = pd.read_csv(path)
            df["seed"] = int(m["seed"])
            frames.setdefault(m["run"], []).append(df)
    return {run: pd.concat(frames[run], ignore_index=True) for run in runs if run in frames}


def load_errors(folder: str | Path, runs: Sequence[str]) -> pd.DataFrame:
    """One row per (run, seed) from ``folder/errors/*.json`` (empty DataFrame if there is none)."""
    rows = [json.loads(p.read_text()) for p in sorted((Path(folder) / "errors").glob("*_seed*.json"))]
    df = pd.DataFrame([r for r in rows if r.get("run") in runs])
    return df.sort_values(["run", "seed"], key=lambda s: s.map(runs.index) if s.name == "run" else s) \
        if len(df) else df


def _final(df: pd.DataFrame, column: str) -> dict[int, float]:
    """{seed: value at the seed's last evaluated iteration}."""
    d = df.dropna(subset=[column]).sort_values("iteration")
    return {int(s): float(g[column].iloc[-1]) for s, g in d.groupby("seed")}


def final_table(curves: dict[str, pd.DataFrame], levels: int, baseline: str = "flat") -> pd.DataFrame:
    """Final validation mIoU (%) per run and level, ``mean ± half-range (n seeds)``, and each run's paired
    difference from ``baseline`` per level (``+d [lo, hi] verdict``, percentage points)."""
    rows = []
    base = curves.get(baseline)
    for run, df in curves.items():
        row: dict[str, object] = {"run": run}
        for level in range(levels, 0, -1):
            vals = _final(df, metric_name(level))
            v = pd.Series(vals, dtype=float)
            row[f"L{level}"] = (f"{100 * v.mean():.1f} ± {50 * (v.max() - v.min()):.1f} (n={len(v)})"
                                if len(v) else "—")
        for level in range(levels, 0, -1):
            if run == baseline:
                row[f"vs {baseline} L{level}"] = "—"
            elif base is not None:
                row[f"vs {baseline} L{level}"] = _paired_cell(_final(df, metric_name(level)),
                                                              _final(base, metric_name(level)), empty="no common seed")
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def pool_curves(studies: Mapping[str, Mapping[str, pd.DataFrame]], profiles: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The curves of several studies of one recipe as one study: ``{run: DataFrame}`` with every seed of every
    study (a ``study`` column added), for :func:`final_table` over the pooled seeds.

    Args: ``studies`` ``{profile: {run: curves}}`` (:func:`load_curves`); ``profiles`` the studies to pool (at
    least two), all present. A run is pooled from the studies that have it.

    Raises:
        ValueError: fewer than two profiles, a profile not in ``studies``, studies whose last evaluated
            iterations differ (other budgets: not one recipe), or a seed trained in two of them for the same run
            (not independent samples).
    """
    if len(profiles) < 2:
        raise ValueError(f"pooling needs at least two studies, got {list(profiles)}")
    missing = [p for p in profiles if p not in studies]
    if missing:
        raise ValueError(f"studies {missing} are not loaded; have {sorted(studies)}")
    budgets = {p: max(int(df["iteration"].max()) for df in studies[p].values()) for p in profiles}
    if len(set(budgets.values())) > 1:
        raise ValueError(f"studies of different budgets cannot be pooled as one recipe: {budgets}")
    pooled: dict[str, pd.DataFrame] = {}
    for run in dict.fromkeys(run for p in profiles for run in studies[p]):
        df = pd.concat([studies[p][run].assign(study=p) for p in profiles if run in studies[p]], ignore_index=True)
        where = df.groupby("seed")["study"].unique()
        shared = where[where.map(len) > 1]
        if len(shared):
            raise ValueError(f"run {run!r}: seed {int(shared.index[0])} is in {list(shared.iloc[0])}; pooled samples "
                             "must not share seeds")
        pooled[run] = df
    return pooled


def load_pipeline_curves(reports_dir: str | Path, runs: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``{run: DataFrame}`` of the train stage's ``reports_dir/plots/<run>_curve.csv`` (every seed, ``seed`` column),
    in ``runs`` order; runs the pipeline has not trained are left out."""
    out = {}
    for run in runs:
        path = Path(reports_dir) / "plots" / f"{run}_curve.csv"
        if path.is_file():
            out[run] = pd.read_csv(path)
    return out


def budget_check(pipeline: dict[str, pd.DataFrame], study: dict[str, pd.DataFrame], levels: int) -> pd.DataFrame:
    """Does the pipeline's budget reach the study's end? Per run and level: the pipeline's final validation mIoU
    (%) and the study's final one, both over the seeds the two have in common, and their paired difference
    pipeline − study (percentage points, 95 % t interval; "no measurable difference" when the interval holds 0).
    Runs without a common seed are left out."""
    rows = []
    for run, df in pipeline.items():
        if run not in study:
            continue
        p_it = int(df["iteration"].max())
        s_it = int(study[run]["iteration"].max())
        for level in range(levels, 0, -1):
            col = metric_name(level)
            if col not in df or col not in study[run]:  # another tree (fewer levels): nothing to pair
                continue
            a, b = _final(df, col), _final(study[run], col)
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            rows.append({"run": run, "level": f"L{level}", "seeds": ",".join(map(str, seeds)),
                         f"pipeline ({p_it} it)": 100 * sum(a[s] for s in seeds) / len(seeds),
                         f"study ({s_it} it)": 100 * sum(b[s] for s in seeds) / len(seeds),
                         "pipeline − study": _paired_cell(a, b)})
    return pd.DataFrame(rows).round(1)


def budget_table(curves: dict[str, pd.DataFrame], level: int, baseline: str = "flat") -> pd.DataFrame:
    """Paired difference from ``baseline`` at ``level`` at every evaluated iteration (rows) for every other run
    (columns): where, along the budget, the ordering of the methods changes."""
    base = curves.get(baseline)
    if base is None:
        raise ValueError(f"no curves for the baseline {baseline!r}; have {sorted(curves)}")
    col = metric_name(level)
    out: dict[str, dict[int, str]] = {}
    for run, df in curves.items():
        if run == baseline:
            continue
        cells: dict[int, str] = {}
        for it, g in df.dropna(subset=[col]).groupby("iteration"):
            b = base[(base["iteration"] == it)].dropna(subset=[col])
            a_s = dict(zip(g["seed"].astype(int), g[col].astype(float), strict=True))
            b_s = dict(zip(b["seed"].astype(int), b[col].astype(float), strict=True))
            if set(a_s) & set(b_s):
                cells[int(it)] = _paired_cell(a_s, b_s)
        out[f"{run} − {baseline}"] = cells
    return pd.DataFrame(out).rename_axis("iteration")


def ladder_finals(studies: Mapping[str, Mapping[str, pd.DataFrame]], profiles: Sequence[str],
                  levels: int) -> pd.DataFrame:
    """The final models of a budget ladder: one recipe trained to several budgets, one study per budget.

    Each study's schedule anneals at its own last iteration, so its final models are what that budget gives (the
    intermediate points of a curve are not). Args: ``studies`` ``{profile: {run: curves}}`` (:func:`load_curves`);
    ``profiles`` the ladder's studies, shortest budget first (those absent from ``studies`` are skipped);
    ``levels`` the tree's depth.

    Returns one row per (study, run, seed), in ladder, run and seed order: ``study``, ``iterations`` (the study's
    last evaluated iteration), ``run``, ``seed`` and the final :func:`metric_name` column of every level (0-1).
    """
    rows: list[dict[str, object]] = []
    for profile in profiles:
        curves = studies.get(profile)
        if not curves:
            continue
        iterations = max(int(df["iteration"].max()) for df in curves.values())
        for run, df in curves.items():
            finals = {level: _final(df, metric_name(level)) if metric_name(level) in df else {}
                      for level in range(levels, 0, -1)}
            for seed in sorted(finals[levels]):
                rows.append({"study": profile, "iterations": iterations, "run": run, "seed": seed,
                             **{metric_name(lv): f.get(seed, float("nan")) for lv, f in finals.items()}})
    return pd.DataFrame(rows)


def budget_ladder(finals: pd.DataFrame, levels: int, baseline: str = "flat") -> pd.DataFrame:
    """What a longer budget buys, from :func:`ladder_finals`: one row per (study, run) with ``study``,
    ``iterations``, ``run``, ``seeds``, and per level (finest first) ``L<l>``, the final validation mIoU (%)
    averaged over the seeds; ``L<l> gain``, the paired difference from the same run one rung down (95 % t interval
    over the seeds in common; "better": the longer budget is higher); ``L<l> − <baseline>``, the paired difference
    from the baseline at the same budget. A cell that cannot be paired holds "—"."""
    def by_seed(g: pd.DataFrame | None, col: str) -> dict[int, float]:
        return {} if g is None else {int(s): float(v) for s, v in zip(g["seed"], g[col], strict=True)
                                              if pd.notna(v)}

    rows: list[dict[str, object]] = []
    studies = list(dict.fromkeys(finals["study"])) if len(finals) else []
    for i, study in enumerate(studies):
        here = finals[finals["study"] == study]
        below = finals[finals["study"] == studies[i - 1]] if i else None
        base = here[here["run"] == baseline]
        for run, g in here.groupby("run", sort=False):
            prev = None if below is None else below[below["run"] == run]
            row: dict[str, object] = {"study": study, "iterations": int(g["iterations"].iloc[0]), "run": run,
                                      "seeds": ",".join(map(str, g["seed"]))}
            for level in range(levels, 0, -1):
                col = metric_name(level)
                mine = by_seed(g, col)
                row[f"L{level}"] = round(100 * sum(mine.values()) / len(mine), 1) if mine else float("nan")
                row[f"L{level} gain"] = _paired_cell(mine, by_seed(prev, col))
                row[f"L{level} − {baseline}"] = "—" if run == baseline else _paired_cell(mine, by_seed(base, col))
            rows.append(row)
    return pd.DataFrame(rows)


def _paired_cell(a: Mapping[int, float], b: Mapping[int, float], empty: str = "—") -> str:
    """``a − b`` paired by seed, formatted with its n (one seed: no interval); ``empty`` when no seed is in both."""
    if not set(a) & set(b):
        return empty
    d = paired_by_seed(a, b)
    return f"{d.format()} (n={d.n})" if d.n > 1 else f"{100 * d.mean:+.1f} (n=1, no interval)"


def split_analysed(errors: pd.DataFrame, levels: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split :func:`load_errors` rows into ``(analysed, older)``: the seeds with the evaluation analysis (bootstrap
    interval, other mIoU conventions, per-class IoU) and those analysed by an older ``scripts/learning_curves.py``
    without it (their models were not kept, so ``--analyse-only`` cannot redo them). ``levels``: the tree's depth
    (the finest level's bootstrap column decides). No row has it: every row is ``older``."""
    boot = f"mIoU_L{levels}_boot_lo"
    if not len(errors) or boot not in errors:
        return errors.iloc[0:0], errors
    has = errors[boot].notna()
    return errors[has], errors[~has]


def evaluation_table(errors: pd.DataFrame, levels: int) -> pd.DataFrame:
    """Per run and level (rows), mean over seeds of the final validation mIoU (%), its bootstrap interval over
    validation images, and the mIoU under the two other conventions (``hierars.metrics.miou_conventions``), from
    the ``analysed`` rows of :func:`split_analysed`.

    Raises:
        ValueError: a row lacks the analysis (every column of a row must cover the same seeds).
    """
    analysed, older = split_analysed(errors, levels)
    if len(older):
        raise ValueError(f"{len(older)} row(s) lack the bootstrap analysis (runs "
                         f"{sorted(set(older['run']))}); pass split_analysed(errors, levels)[0]")
    rows = []
    for run, g in analysed.groupby("run", sort=False):
        for level in range(levels, 0, -1):
            k = f"mIoU_L{level}"
            rows.append({"run": run, "level": f"L{level}", "seeds": len(g),
                         "mIoU": 100 * g[k].mean(),
                         "bootstrap 95 %": f"[{100 * g[f'{k}_boot_lo'].mean():.1f}, "
                                           f"{100 * g[f'{k}_boot_hi'].mean():.1f}]",
                         "classes present": 100 * g[f"{k}_present"].mean(),
                         "per image": 100 * g[f"{k}_per_image"].mean()})
    return pd.DataFrame(rows).set_index(["run", "level"]).round(1)


def per_class_table(errors: pd.DataFrame, level: int) -> pd.DataFrame:
    """IoU (%) per class at ``level`` (rows, the tree's order) for each run (columns), mean over seeds (NaN seeds
    skipped: a class never in the ground truth nor predicted)."""
    prefix = f"IoU_L{level}_"
    cols = [c for c in errors.columns if c.startswith(prefix)]
    table = errors.groupby("run", sort=False)[cols].mean().T * 100
    table.index = [c[len(prefix):] for c in cols]
    return table.rename_axis(f"L{level} class").round(1)
