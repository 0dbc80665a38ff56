"""The figures stage's tables and figures (hierars.plotting_paper, hierars.plotting_figures) on small made-up inputs."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

from hierars import Hierarchy  # noqa: E402
from hierars.plotting_figures import (  # noqa: E402
    diverse_indices,
    plot_ablation_grid,
    plot_jsps,
    plot_levels,
    plot_prediction_comparison,
    plot_retrieval,
    plot_transfer,
    plot_tree_legend,
)
from hierars.plotting_paper import (  # noqa: E402
    complexity_table,
    level_tables,
    retrieval_tables,
    save_paper_table,
    seeds_note,
    transfer_table,
)
from hierars.training import resolve_run  # noqa: E402

TRAIN = {"arch": "fpn", "encoder": "tu-convnext_atto", "decoder_channels": 32, "seeds": [0, 1],
         "runs": {"flat": {"head": "flat", "loss": "ce"}, "bhccm_hsc": {"head": "bhccm", "fusion": "bidirectional",
                                                                        "loss": "hsc"},
                  "hssn": {"head": "hssn", "loss": "hssn"},
                  "abl_none_hsc": {"head": "bhccm", "fusion": "none", "loss": "hsc"},
                  "abl_none_ce": {"head": "bhccm", "fusion": "none", "loss": "ce"}}}
#: per run, per seed, the finest-level mIoU (the other levels follow from it)
PER_SEED = {"flat": [0.30, 0.32], "bhccm_hsc": [0.35, 0.38], "hssn": [0.20, 0.21], "abl_none_hsc": [0.31, 0.30],
            "abl_none_ce": [0.25, 0.27]}


def _metrics(v: float) -> dict[str, float]:
    return {f"mIoU_L{lvl}{s}": v + 0.1 * (3 - lvl) + (0.01 if s else 0.0) for lvl in (1, 2, 3)
            for s in ("", "_jsps")} | {"consistency": 0.8, "consistency_jsps": 1.0}


@pytest.fixture
def runs(tmp_path):
    """collect_run_metrics-shaped runs and models/<run>/seed<k>/metrics.json files."""
    out = {}
    for run, vals in PER_SEED.items():
        per = [_metrics(v) for v in vals]
        agg = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
        agg |= {f"{k}_hr": float((max(p[k] for p in per) - min(p[k] for p in per)) / 2) for k in per[0]}
        agg["n_seeds"] = float(len(vals))
        out[run] = {"config": resolve_run(TRAIN, run), "metrics": agg}
        for seed, m in enumerate(per):
            d = tmp_path / "models" / run / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({"seed": seed, **m}))
    return out


def test_seeds_note_names_the_smallest_count():
    assert seeds_note([3, 5, 3]) == ""
    text = seeds_note([3, 2, 1])
    assert "2 of 3 rows" in text and "1 seed" in text
    assert "unknown" in seeds_note([float("nan")])


def test_level_tables_rows_sources_and_paired_differences(runs, tmp_path):
    tables = level_tables(runs, tmp_path / "models")
    main = tables["main"].data
    assert sorted(main["source"]) == ["metrics/bhccm_hsc.json", "metrics/flat.json", "metrics/hssn.json"]
    # BHCCM + HSC in the main table is JSPS-decoded: L3 = mean(0.35, 0.38) + 0.01
    row = main.loc[[i for i in main.index if "[bhccm_hsc]" in i][0]]
    assert row["L3"] == pytest.approx(0.375)
    # paired by seed: (0.36 - 0.30, 0.39 - 0.32) -> mean +6.5 points
    assert tables["main"].data.loc[row.name, "vs flat, L3"].startswith("+6.5 [")
    files = tables["main"].source.split("reports/metrics/{")[1].split("}")[0].split(",")
    assert sorted(files) == ["bhccm_hsc", "flat", "hssn"]
    assert "fewer than 3 seeds" in tables["main"].notes[0]
    abl = tables["ablation"].data
    assert [i.split()[0] for i in abl.index] == ["0", "1", "5", "8"]  # flat, none+CE, none+HSC, bidirectional+HSC
    assert "abl_none_ce" not in " ".join(main.index)


def test_save_paper_table_writes_csv_and_markdown(runs, tmp_path):
    table = level_tables(runs)["main"]
    csv_path, md_path = save_paper_table(table, tmp_path / "out")
    df = pd.read_csv(csv_path, index_col="row")
    assert {"L3", "L3_hr", "seeds", "source"} <= set(df.columns) and len(df) == 3
    md = md_path.read_text()
    assert md.startswith("### Tables II-IV") and "_Source: train stage" in md and "fewer than 3 seeds" in md
    assert "L3 mIoU (%)" in md and "37.50 ± 1.50" in md


def _transfer_files(reports, exp="toy", seeds=3):
    m = {}
    for v, base in (("finetune", 0.40), ("translu", 0.45)):
        for lvl in (1, 2):
            m[f"{v}_mIoU_L{lvl}"], m[f"{v}_mIoU_L{lvl}_hr"] = base + 0.1 * (2 - lvl), 0.01
        d = reports / "transfer" / exp / "metrics"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"transfer_{exp}_{v}.json").write_text(json.dumps({"n_seeds": seeds}))
    m |= {"translu_vs_finetune_L2": 0.05, "translu_vs_finetune_L2_lo": 0.01, "translu_vs_finetune_L2_hi": 0.09,
          "translu_vs_finetune_L1": 0.05, "translu_vs_finetune_L1_lo": -0.01, "translu_vs_finetune_L1_hi": 0.11}
    (reports / "metrics").mkdir(parents=True, exist_ok=True)
    (reports / "metrics" / f"transfer_{exp}.json").write_text(json.dumps(m))


def test_transfer_table_reads_metrics_and_seed_counts(tmp_path):
    _transfer_files(tmp_path, seeds=2)
    t = transfer_table(tmp_path, "toy")
    assert list(t.data.index) == ["finetune", "translu"]
    assert t.data.loc["translu", "L2"] == pytest.approx(0.45) and t.data.loc["translu", "seeds"] == 2
    assert t.shown.loc["translu", "vs finetune, L2"] == "+5.0 [+1.0, +9.0]"
    assert t.shown.loc["finetune", "vs finetune, L2"] == "—"
    assert "fewer than 3 seeds" in t.notes[0]
    with pytest.raises(FileNotFoundError, match="transfer_nope.json"):
        transfer_table(tmp_path, "nope")


def _retrieval_csv(path):
    rows = []
    for exp, q in (("tableIV", 10), ("tableV", 4)):
        for prop in ("predicted", "ground truth"):
            for method, v in (("CBIR", 0.6), ("LCBIR", 0.4), ("HIR (K=5, w=1)", 0.5)):
                if prop == "ground truth" and method == "CBIR":
                    continue
                rows.append({"experiment": exp, "proportions": prop, "method": method, "key": method,
                             "queries": q, "mAP@5": v, "P@5": v - 0.1})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_retrieval_tables_split_by_experiment(tmp_path):
    _retrieval_csv(tmp_path / "r.csv")
    tables = retrieval_tables(tmp_path / "r.csv")
    assert list(tables) == ["tableIV", "tableV"]
    assert tables["tableV"].shown.loc["LCBIR (ground truth)", "mAP@5"] == pytest.approx(40.0)
    assert "1 seed" in tables["tableIV"].notes[0]
    pd.DataFrame({"experiment": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="bad.csv.*proportions"):
        retrieval_tables(tmp_path / "bad.csv")


def test_complexity_bhccm_head_costs_more_than_flat(runs):
    torch.set_num_threads(1)
    h = Hierarchy.builtin("mm5b")
    t = complexity_table({r: runs[r]["config"] for r in ("flat", "bhccm_hsc")}, h, in_channels=4, sizes=(64, 128),
                         metrics={"flat": {"seconds_per_iter": 1.5, "n_seeds": 2}})
    flat, bh = (t.data.loc[[i for i in t.data.index if f"[{r}]" in i][0]] for r in ("flat", "bhccm_hsc"))
    assert bh["head_params_M"] > flat["head_params_M"] > 0 and bh["params_M"] > flat["params_M"]
    assert bh["GFLOPs_64px"] > flat["GFLOPs_64px"] > 0
    assert bh["GFLOPs_128px"] == pytest.approx(4 * bh["GFLOPs_64px"], rel=0.05)  # FLOPs scale with the pixels
    assert flat["step_s"] == 1.5 and np.isnan(bh["step_s"])


def test_figures_are_written(runs, tmp_path):
    tables = level_tables(runs, tmp_path / "models")
    plot_levels(tables["main"], tmp_path / "main.png")
    fig = plot_ablation_grid(tables["ablation"], runs, tmp_path / "abl.png")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "30.5\n± 0.5" in texts  # BHCCM none + HSC at L3 (argmax): mean and half-range of 0.31, 0.30
    fig = plot_jsps(tables["jsps"], tmp_path / "jsps.png")
    assert len(fig.axes[0].get_yticklabels()) == 3  # bhccm_hsc, abl_none_hsc, abl_none_ce: one row per run
    _transfer_files(tmp_path / "rep")
    plot_transfer([transfer_table(tmp_path / "rep", "toy")], tmp_path / "tr.png")
    _retrieval_csv(tmp_path / "r.csv")
    plot_retrieval(retrieval_tables(tmp_path / "r.csv"), "mAP@5", tmp_path / "ret.png")
    with pytest.raises(ValueError, match="mAP@10"):
        plot_retrieval(retrieval_tables(tmp_path / "r.csv"), "mAP@10")
    for name in ("main", "abl", "jsps", "tr", "ret"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_tree_legend_uses_the_tree_colours():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h = Hierarchy.builtin("mm5b")
    fig, ax = plt.subplots()
    plot_tree_legend(ax, h)
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == sum(h.num_classes)
    want = {tuple(np.round(c / 255.0, 4)) for pal in h.palettes() for c in np.asarray(pal, float)}
    got = {tuple(np.round(b.get_facecolor()[:3], 4)) for b in boxes}
    assert got == want
    # a parent's box spans exactly its leaves' rows: the first root covers the leaves whose path starts with 0
    first = [b for b in boxes if b.get_x() == 0][0]
    assert first.get_height() == pytest.approx(int((h.paths[:, 0] == 0).sum()) - 0.06)
    plt.close(fig)


def test_prediction_comparison_and_diverse_indices(tmp_path):
    h = Hierarchy.builtin("mm5b")
    g = torch.Generator().manual_seed(0)
    leaves = torch.randint(0, len(h.paths), (3, 16, 16), generator=g)
    masks = [h.paths[leaf].permute(2, 0, 1) for leaf in leaves]  # L x H x W, valid paths
    masks[1][:, :, :] = h.paths[0].view(-1, 1, 1)  # one class only
    ds = [{"image": torch.rand(4, 16, 16, generator=g), "mask": m} for m in masks]
    assert diverse_indices(ds, 2) == [0, 2]
    broken = masks[0].clone()
    broken[0, :4, :4] = (broken[0, :4, :4] + 1) % h.num_classes[0]  # parent no longer matches: not a path
    samples = [{"image": ds[0]["image"], "mask": masks[0], "title": "t", "preds": {"a": masks[0], "b": broken}}]
    fig = plot_prediction_comparison(samples, h, tmp_path / "maps.png", note="Source: test")
    assert (tmp_path / "maps.png").stat().st_size > 10_000
    assert len([c for ax in fig.axes for c in ax.collections]) >= 1  # the invalid pixels of "b" are outlined
    with pytest.raises(ValueError, match="at least one sample"):
        plot_prediction_comparison([], h)


def test_one_paired_seed_reports_no_interval(runs, tmp_path):
    (tmp_path / "models" / "bhccm_hsc" / "seed1" / "metrics.json").unlink()
    main = level_tables(runs, tmp_path / "models")["main"].data
    cell = main.loc[[i for i in main.index if "[bhccm_hsc]" in i][0], "vs flat, L3"]
    assert cell == "+6.0 (1 paired seed: no interval)"  # seed 0 only: 0.36 - 0.30
    assert not any("nan" in c for col in ("vs flat, L3", "vs flat, L2", "vs flat, L1") for c in main[col])


def test_complexity_overhead_over_flat(runs):
    torch.set_num_threads(1)
    t = complexity_table({r: runs[r]["config"] for r in ("flat", "bhccm_hsc")}, Hierarchy.builtin("mm5b"), 4,
                         sizes=(64,))
    overhead = dict(zip(t.shown.index, t.shown["params vs flat"], strict=True))
    assert overhead[[i for i in overhead if "[flat]" in i][0]] == "+0.00 %"
    assert overhead[[i for i in overhead if "[bhccm_hsc]" in i][0]].startswith("+0.")  # a small head: < 1 %


def test_bench_table_reads_the_benchmark_ratios(tmp_path):
    from hierars.plotting_paper import bench_table

    entry = {"size": 128, "batch": 8, "params": {"flat_ce": 4_000_000, "bhccm_hsc": 4_002_000}, "params_ratio": 1.0005,
             "forward_gflops_per_image": {"flat": 0.85, "bhccm": 0.86}, "flops_ratio": 1.0118,
             "step_s": {"flat_ce": 0.5, "bhccm_hsc": 0.7}, "step_ratio": 1.4}
    (tmp_path / "bench.json").write_text(json.dumps({"bhccm_vs_flat": {"fpn": entry}}))
    t = bench_table(tmp_path / "bench.json")
    assert t.data.loc["fpn", "step_ratio"] == 1.4 and t.data.loc["fpn", "params_bhccm"] == 4_002_000
    assert t.shown.loc["fpn", "BHCCM / flat: params, FLOPs, step"] == "1.0005, 1.0118, 1.40"
    assert not any(c.startswith("extra") for c in t.shown.columns)  # an older file without the split
    entry["extra_ms"] = {"head": 4.25, "upsampling": 1.0, "loss": 5.0, "rest": 0.5}
    (tmp_path / "bench.json").write_text(json.dumps({"bhccm_vs_flat": {"fpn": entry}}))
    t = bench_table(tmp_path / "bench.json")
    assert t.shown.loc["fpn", "extra step (ms): head / upsampling / loss / rest"] == "4.2 / 1.0 / 5.0 / 0.5"
    assert t.data.loc["fpn", "extra_ms_loss"] == 5.0 and "threads" not in t.source
    (tmp_path / "bench.json").write_text(json.dumps({"meta": {"threads": 2}, "bhccm_vs_flat": {"fpn": entry}}))
    assert "interleaved steps, 2 torch threads on" in bench_table(tmp_path / "bench.json").source
    assert bench_table(tmp_path / "bench.json").notes == []  # no head_bound section: no note
    ratios = {"bhccm_hsc": {"mean": 1.136, "lo95": 1.127, "hi95": 1.145},
              "bhccm_hsc_bound": {"mean": 1.112, "lo95": 1.099, "hi95": 1.126},
              "bhccm_ce": {"mean": 1.078, "lo95": None, "hi95": None}}
    (tmp_path / "bench.json").write_text(json.dumps({"bhccm_vs_flat": {"fpn": entry},
                                                     "head_bound": {"rounds": 6, "ratio_to_flat": ratios}}))
    (note,) = bench_table(tmp_path / "bench.json").notes
    assert "BHCCM + HSC 1.136 [1.127, 1.145]" in note and "re-layout of its parameters) 1.112 [1.099, 1.126]" in note
    assert "path term 1.078 (" in note and "over 6 rounds" in note
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="empty.json.*bhccm_vs_flat"):
        bench_table(tmp_path / "empty.json")
