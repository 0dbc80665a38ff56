"""Training curves: every seed plus the mean over seeds; losses of different objectives on separate axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from hierars.plotting import plot_training_curves  # noqa: E402
from hierars.plotting_curves import curve_panels  # noqa: E402


def _curve(seeds=(0, 1), scale=1.0) -> pd.DataFrame:
    rows = []
    for s in seeds:
        for it in (10, 20, 30):
            rows.append({"seed": s, "iteration": it, "loss": scale * (5 - it / 10 + s),
                         "val_mIoU_L3": (0.1 * it / 10 + 0.05 * s) if it != 10 else np.nan})
    return pd.DataFrame(rows)


def test_each_seed_and_the_mean_are_drawn(tmp_path):
    out = tmp_path / "run_curve.png"
    fig = plot_training_curves({"run": _curve()}, metrics=("loss", "val_mIoU_L3"), out_path=out)
    assert out.is_file() and out.stat().st_size > 0
    ax_loss, ax_miou = fig.axes[:2]
    lines = ax_loss.get_lines()
    assert len(lines) == 3  # seed 0, seed 1, mean
    mean = next(line for line in lines if "mean of 2 seeds" in str(line.get_label()))
    np.testing.assert_allclose(mean.get_ydata(), [4.5, 3.5, 2.5])  # (5 - it/10) + 0.5
    assert mean.get_linewidth() > max(line.get_linewidth() for line in lines if line is not mean)
    assert sorted(str(line.get_label()) for line in lines if line is not mean) == ["seed 0", "seed 1"]
    np.testing.assert_allclose(next(ln for ln in lines if ln.get_label() == "seed 1").get_ydata(), [5, 4, 3])
    # val metrics are logged at eval iterations only: NaN rows are dropped, not drawn as gaps
    m = next(line for line in ax_miou.get_lines() if "mean" in str(line.get_label()))
    np.testing.assert_allclose(m.get_xdata(), [20, 30])
    np.testing.assert_allclose(m.get_ydata(), [0.225, 0.325])


def test_single_seed_draws_one_line():
    fig = plot_training_curves({"r": _curve(seeds=(0,))}, metrics=("loss",))
    assert len(fig.axes[0].get_lines()) == 1


def test_losses_of_different_objectives_do_not_share_an_axis():
    curves = {"flat": _curve(), "bhccm_hsc": _curve(scale=10.0), "abl_bi_ce": _curve()}
    objectives = {"flat": "ce", "bhccm_hsc": "hsc", "abl_bi_ce": "ce"}
    panels = curve_panels(curves, ("loss", "val_mIoU_L3"), objectives)
    assert [(t, r) for t, _, r in panels] == [("training loss (ce)", ["flat", "abl_bi_ce"]),
                                              ("training loss (hsc)", ["bhccm_hsc"]),
                                              ("validation mIoU, L3 (argmax)", ["flat", "bhccm_hsc", "abl_bi_ce"])]
    fig = plot_training_curves(curves, metrics=("loss", "val_mIoU_L3"), objectives=objectives)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["training loss (ce)", "training loss (hsc)", "validation mIoU, L3 (argmax)"]
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_title()] == ["loss", "loss", "mIoU (0-1)"]
    hsc_ax = fig.axes[1]
    assert {str(line.get_label()).split(" ")[0] for line in hsc_ax.get_lines()} >= {"bhccm_hsc"}
    assert not any("flat" in str(line.get_label()) for line in hsc_ax.get_lines())


def test_unknown_metrics_are_an_error():
    with pytest.raises(ValueError, match="none of the metrics"):
        plot_training_curves({"r": _curve()}, metrics=("val_mIoU_L9",))


def test_describe_metric():
    from hierars.plotting_curves import describe_metric

    assert describe_metric("val_mIoU_L2_jsps") == ("validation mIoU, L2 (JSPS)", "mIoU (0-1)")
    assert describe_metric("val_OA_L1") == ("validation OA, L1 (argmax)", "OA (0-1)")
    assert describe_metric("lr")[0] == "learning rate" and describe_metric("custom") == ("custom", "custom")


def test_plot_budget_ladder_draws_a_mean_line_per_run(tmp_path):
    import pandas as pd

    from hierars.plotting_curves import plot_budget_ladder

    rows = [{"study": f"s{it}", "iterations": it, "run": run, "seed": seed,
             "val_mIoU_L3_jsps": base + it / 1000 + seed / 100, "val_mIoU_L1_jsps": 0.5}
            for it in (280, 840, 1680) for run, base in (("flat", 0.3), ("bhccm_hsc", 0.31)) for seed in (0, 1, 2)
            if not (run == "bhccm_hsc" and it == 1680 and seed == 2)]
    out = tmp_path / "ladder.png"
    fig = plot_budget_ladder(pd.DataFrame(rows), ["val_mIoU_L3_jsps", "val_mIoU_L1_jsps", "absent"], out_path=out)
    assert out.stat().st_size > 0 and len(fig.axes) == 2
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"flat (mean of 3 seeds)", "bhccm_hsc (mean of 2-3 seeds)"}
    assert list(lines["flat (mean of 3 seeds)"].get_xdata()) == [280, 840, 1680]
    assert lines["flat (mean of 3 seeds)"].get_ydata()[1] == pytest.approx(0.3 + 0.84 + 0.01)
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["280", "840", "1680"]
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_budget_ladder(pd.DataFrame(rows), ["absent"])
