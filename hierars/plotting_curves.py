"""Training curves (plotting layer): every seed as a thin line, their mean as a thick one; losses of different
objectives on separate axes. Re-exported by :mod:`hierars.plotting`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from hierars.atomic import atomic_savefig

__all__ = ["curve_panels", "describe_metric", "plot_budget_ladder", "plot_training_curves"]


_CURVE_METRIC = re.compile(r"^val_(?P<name>mIoU|OA|mAcc)_L(?P<level>\d+)(?P<jsps>_jsps)?$")


def describe_metric(metric: str) -> tuple[str, str]:
    """Readable ``(title, y-axis label)`` of a curve column, e.g. ``val_mIoU_L3_jsps`` ->
    ``("validation mIoU, L3 (JSPS)", "mIoU (0-1)")``; unknown columns are returned as they are."""
    m = _CURVE_METRIC.match(metric)
    if m:
        decoding = "JSPS" if m["jsps"] else "argmax"
        return f"validation {m['name']}, L{m['level']} ({decoding})", f"{m['name']} (0-1)"
    return {"loss": ("training loss", "loss"), "lr": ("learning rate", "learning rate")}.get(metric, (metric, metric))


def curve_panels(curves: Mapping, metrics: Sequence[str], objectives: Mapping[str, str] | None = None,
                 split: Sequence[str] = ("loss",)) -> list[tuple[str, str, list[str]]]:
    """Panels of :func:`plot_training_curves`: ``[(title, metric, [run, ...]), ...]`` in ``metrics`` order.

    A metric in ``split`` (the training loss) gets one panel per objective in ``objectives`` (run -> loss name),
    since CE, HSC and HSSN losses have different scales; the other metrics get one panel with every run.
    Runs whose curve lacks the metric are left out; panels with no run are dropped.
    """
    panels = []
    for metric in metrics:
        runs = [r for r, df in curves.items() if metric in df and df[metric].notna().any()]
        title = describe_metric(metric)[0]
        if metric in split and objectives:
            for obj in dict.fromkeys(objectives.get(r, "?") for r in runs):
                panels.append((f"{title} ({obj})", metric, [r for r in runs if objectives.get(r, "?") == obj]))
        elif runs:
            panels.append((title, metric, runs))
    return panels


def plot_training_curves(curves: Mapping, metrics: Sequence[str] = ("loss", "val_mIoU_L3"),
                         out_path: str | Path | None = None, objectives: Mapping[str, str] | None = None,
                         ncols: int = 3):
    """Training curves per run, per seed and their mean.

    Args:
        curves: run name -> DataFrame of curve rows (columns ``iteration``, the metrics, optionally ``seed``; the
            ``reports/plots/<run>_curve.csv`` written by ``hierars.training.train_run``).
        metrics: one panel per metric (per objective for ``loss`` when ``objectives`` is given).
        objectives: run name -> its loss (``ce``/``hsc``/``hssn``): losses of different objectives get their own
            panel instead of sharing an axis.
        ncols: panels per figure row.

    Each seed is a thin line in the run's colour (labelled ``seed <k>`` when the panel has one run) and the mean
    over seeds (at the iterations every seed logged) a thick line labelled ``<run> (mean of n seeds)``. Returns the Figure (saved to ``out_path`` when given).
    """
    import matplotlib.pyplot as plt

    panels = curve_panels(curves, metrics, objectives)
    if not panels:
        raise ValueError(f"none of the metrics {list(metrics)} is in the curves of {list(curves)}")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    colors = {run: f"C{i % 10}" for i, run in enumerate(curves)}
    for ax, (title, metric, runs) in zip(axes.flat, panels):
        for run in runs:
            df = curves[run]
            cols = ["iteration", metric] + (["seed"] if "seed" in df else [])
            d = df[cols].dropna(subset=[metric])
            seeds = sorted(d["seed"].unique()) if "seed" in d else [None]
            for s in seeds:
                ds = d if s is None else d[d["seed"] == s]
                if len(seeds) > 1:  # seeds labelled in a one-run figure (<run>_curve.png), not in the report's
                    ax.plot(ds["iteration"], ds[metric], color=colors[run], lw=0.8, alpha=0.45,
                            label=f"seed {s}" if len(runs) == 1 else None)
            g = d.groupby("iteration")[metric]
            mean = g.mean()[g.count() == len(seeds)]
            label = f"{run} (mean of {len(seeds)} seeds)" if len(seeds) > 1 else run
            ax.plot(mean.index, mean.values, color=colors[run], lw=2.0, label=label,
                    marker="." if len(mean) < 15 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel(describe_metric(metric)[1])
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    if out_path is not None:
        atomic_savefig(fig, out_path)
    return fig


def plot_budget_ladder(finals, metrics: Sequence[str], out_path: str | Path | None = None, title: str = ""):
    """What a longer budget buys: the final validation score of each run against its training budget.

    Args:
        finals: one row per (study, run, seed) with ``iterations``, ``run``, ``seed`` and the ``metrics`` columns
            (``hierars.project.fidelity.ladder_finals``: each study one budget of the same recipe, its schedule
            annealed at its end).
        metrics: one panel per metric, e.g. ``val_mIoU_L3_jsps``.
        title: the figure's title (e.g. the ladder's studies).

    Each seed is a small dot in the run's colour, the mean over seeds a line through the budgets (x on a log scale,
    ticked at the budgets). Returns the Figure (saved to ``out_path`` when given).
    """
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if m in finals and finals[m].notna().any()]
    if not len(finals) or not metrics:
        raise ValueError(f"nothing to plot: {len(finals)} rows, metrics present {metrics}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    runs = list(dict.fromkeys(finals["run"]))
    budgets = sorted(finals["iterations"].unique())
    for ax, metric in zip(axes.flat, metrics):
        for i, run in enumerate(runs):
            d = finals[finals["run"] == run].dropna(subset=[metric])
            ax.scatter(d["iterations"], d[metric], s=12, color=f"C{i % 10}", alpha=0.5, linewidths=0)
            mean = d.groupby("iterations")[metric].mean()
            n = d.groupby("iterations")[metric].count()
            label = f"{run} (mean of {n.min()}-{n.max()} seeds)" if n.min() != n.max() else \
                f"{run} (mean of {n.min()} seeds)"
            ax.plot(mean.index, mean.values, color=f"C{i % 10}", lw=2.0, marker="o", ms=4, label=label)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("training budget (iterations, schedule annealed at the end)", fontsize=8)
        ax.set_ylabel(describe_metric(metric)[1])
        ax.set_title(describe_metric(metric)[0], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if out_path is not None:
        atomic_savefig(fig, out_path)
    return fig
