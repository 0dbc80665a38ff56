"""The fidelity study's readers and tables (hierars.project.fidelity) on small hand-made curves."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hierars.project.fidelity import budget_table, final_table, load_curves, load_errors


def _write(folder, run, seed, values):
    rows = [{"seed": seed, "iteration": it, "loss": 1.0, **{f"val_mIoU_L{lv}_jsps": v + 0.1 * (3 - lv)
                                                               for lv in (1, 2, 3)}}
            for it, v in values]
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "plots" / f"{run}_seed{seed}_curve.csv", index=False)


def test_tables_pair_by_seed_and_find_the_crossing(tmp_path):
    # flat leads early, bhccm overtakes by 2-4 points at iteration 200 for every seed
    for seed, noise in ((0, 0.00), (1, 0.01), (2, -0.01)):
        _write(tmp_path, "flat", seed, [(100, 0.20 + noise), (200, 0.25 + noise)])
        _write(tmp_path, "bhccm_hsc", seed, [(100, 0.15 + noise), (200, 0.28 + noise + 0.01 * seed)])
    _write(tmp_path, "hssn", 5, [(100, 0.1), (200, 0.1)])  # no seed in common with flat
    curves = load_curves(tmp_path, ["flat", "bhccm_hsc", "hssn", "absent"])
    assert list(curves) == ["flat", "bhccm_hsc", "hssn"] and sorted(curves["flat"]["seed"].unique()) == [0, 1, 2]
    table = final_table(curves, levels=3)
    assert table.loc["flat", "L3"] == "25.0 ± 1.0 (n=3)"
    assert table.loc["bhccm_hsc", "vs flat L3"].startswith("+4.0 [") and \
        table.loc["bhccm_hsc", "vs flat L3"].endswith("better (n=3)")
    assert table.loc["hssn", "vs flat L3"] == "no common seed" and table.loc["flat", "vs flat L3"] == "—"
    budget = budget_table(curves, level=3)
    assert budget.loc[100, "bhccm_hsc − flat"].startswith("-5.0 [") and "worse" in budget.loc[100, "bhccm_hsc − flat"]
    assert "better" in budget.loc[200, "bhccm_hsc − flat"] and "(n=3)" in budget.loc[200, "bhccm_hsc − flat"]
    with pytest.raises(ValueError, match="baseline"):
        budget_table({"bhccm_hsc": curves["bhccm_hsc"]}, level=3)


def test_one_common_seed_is_a_difference_without_an_interval(tmp_path):
    # every table of the module formats a single pairable seed the same way: the difference, no interval, no NaN
    from hierars.project.fidelity import budget_check

    _write(tmp_path / "s", "flat", 0, [(100, 0.20), (200, 0.25)])
    _write(tmp_path / "s", "flat", 1, [(100, 0.30), (200, 0.30)])
    _write(tmp_path / "s", "bhccm_hsc", 1, [(100, 0.33), (200, 0.32)])  # only seed 1 in common with flat
    curves = load_curves(tmp_path / "s", ["flat", "bhccm_hsc"])
    cells = [final_table(curves, levels=3).loc["bhccm_hsc", "vs flat L3"],
             budget_table(curves, level=3).loc[200, "bhccm_hsc − flat"],
             budget_check({"bhccm_hsc": curves["bhccm_hsc"]}, curves, levels=3)["pipeline − study"].iloc[0]]
    assert cells[:2] == ["+2.0 (n=1, no interval)"] * 2
    assert cells[2] == "+0.0 (n=1, no interval)"
    assert not any("nan" in c for c in cells)


def test_missing_folder_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="learning_curves.py"):
        load_curves(tmp_path / "nothing", ["flat"])
    (tmp_path / "errors").mkdir()
    for run, seed in (("hssn", 0), ("flat", 1), ("flat", 0), ("other", 0)):
        (tmp_path / "errors" / f"{run}_seed{seed}.json").write_text(json.dumps({"run": run, "seed": seed}))
    df = load_errors(tmp_path, ["flat", "hssn"])
    assert list(zip(df["run"], df["seed"], strict=True)) == [("flat", 0), ("flat", 1), ("hssn", 0)]


def test_budget_check_pairs_the_pipeline_with_the_study(tmp_path):
    from hierars.project.fidelity import budget_check, load_pipeline_curves

    study = tmp_path / "study"
    for seed, noise in ((0, 0.0), (1, 0.02), (2, -0.02)):
        _write(study, "flat", seed, [(450, 0.24 + noise), (900, 0.25 + noise)])
    # the pipeline's train stage writes one CSV per run with every seed (seed 3 has no study counterpart)
    rows = [{"seed": seed, "iteration": it, "loss": 1.0, **{f"val_mIoU_L{lv}_jsps": v + noise + 0.1 * (3 - lv)
                                                             for lv in (1, 2, 3)}}
            for seed, noise in ((0, 0.0), (1, 0.02), (2, -0.02), (3, 0.5)) for it, v in ((150, 0.1), (300, 0.2))]
    (tmp_path / "reports" / "plots").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "reports" / "plots" / "flat_curve.csv", index=False)
    pipeline = load_pipeline_curves(tmp_path / "reports", ["flat", "bhccm_hsc"])
    assert list(pipeline) == ["flat"]
    check = budget_check(pipeline, load_curves(study, ["flat"]), levels=3)
    row = check[(check["run"] == "flat") & (check["level"] == "L3")].iloc[0]
    assert row["study (900 it)"] == pytest.approx(25.0)
    assert row["pipeline (300 it)"] == pytest.approx(20.0) and row["seeds"] == "0,1,2"  # seed 3: not in the study
    # paired on seeds 0-2 only: exactly -5 points for each of them
    assert row["pipeline − study"].startswith("-5.0 [") and "worse" in row["pipeline − study"]
    assert row["pipeline − study"].endswith("(n=3)")


def test_evaluation_and_per_class_tables():
    from hierars.project.fidelity import evaluation_table, per_class_table

    rows = []
    for run, base in (("flat", 0.40), ("bhccm_hsc", 0.42)):
        for seed, noise in ((0, 0.0), (1, 0.02)):
            v = base + noise
            rows.append({"run": run, "seed": seed, "mIoU_L1": v, "mIoU_L1_boot_lo": v - 0.03,
                         "mIoU_L1_boot_hi": v + 0.03, "mIoU_L1_present": v + 0.01, "mIoU_L1_per_image": v + 0.05,
                         "IoU_L1_water": v, "IoU_L1_bare": float("nan") if seed else 0.2})
    df = pd.DataFrame(rows)
    ev = evaluation_table(df, levels=1)
    assert ev.loc[("flat", "L1"), "mIoU"] == pytest.approx(41.0)
    assert ev.loc[("bhccm_hsc", "L1"), "bootstrap 95 %"] == "[40.0, 46.0]"
    assert ev.loc[("flat", "L1"), "per image"] == pytest.approx(46.0) and ev.loc[("flat", "L1"), "seeds"] == 2
    pc = per_class_table(df, level=1)
    assert list(pc.index) == ["water", "bare"] and list(pc.columns) == ["flat", "bhccm_hsc"]
    assert pc.loc["bare", "flat"] == pytest.approx(20.0)  # the NaN seed is skipped, not counted as 0


def test_budget_ladder_pairs_each_rung_with_the_one_below(tmp_path):
    from hierars.project.fidelity import budget_ladder, ladder_finals

    studies = {}
    # flat: +10 points from 100 to 200 iterations, +1 from 200 to 400; bhccm: +12 then +3, 1 point below flat at 100
    for profile, last, flat, bhccm in (("short", 100, 0.30, 0.29), ("mid", 200, 0.40, 0.41), ("long", 400, 0.41, 0.44)):
        folder = tmp_path / profile
        for seed, noise in ((0, 0.0), (1, 0.01), (2, -0.01)):
            _write(folder, "flat", seed, [(last // 2, 0.1), (last, flat + noise)])
            _write(folder, "bhccm_hsc", seed, [(last // 2, 0.1), (last, bhccm + noise + 0.002 * seed)])
        studies[profile] = load_curves(folder, ["flat", "bhccm_hsc"])
    finals = ladder_finals(studies, ["short", "absent", "mid", "long"], levels=3)
    assert list(finals["study"].unique()) == ["short", "mid", "long"] and len(finals) == 18
    assert finals.loc[(finals["study"] == "mid") & (finals["run"] == "flat") & (finals["seed"] == 1),
                      "val_mIoU_L3_jsps"].item() == pytest.approx(0.41)
    ladder = budget_ladder(finals, levels=3).set_index(["study", "run"])
    assert ladder.loc[("long", "flat"), "iterations"] == 400 and ladder.loc[("long", "flat"), "seeds"] == "0,1,2"
    assert ladder.loc[("mid", "flat"), "L3"] == pytest.approx(40.0)
    assert ladder.loc[("short", "flat"), "L3 gain"] == "—"  # nothing below the first rung
    assert ladder.loc[("mid", "flat"), "L3 gain"].startswith("+10.0 [") and "better" in ladder.loc[("mid", "flat"),
                                                                                                     "L3 gain"]
    assert ladder.loc[("long", "bhccm_hsc"), "L3 gain"].startswith("+3.0 [")
    assert ladder.loc[("short", "bhccm_hsc"), "L3 − flat"].startswith("-0.8 [")  # -1 + 0.2 mean seed offset
    assert ladder.loc[("long", "bhccm_hsc"), "L3 − flat"].startswith("+3.") and \
        ladder.loc[("long", "bhccm_hsc"), "L3 − flat"].endswith("(n=3)")
    assert ladder.loc[("long", "flat"), "L1 − flat"] == "—"
    assert budget_ladder(ladder_finals(studies, ["absent"], levels=3), levels=3).empty
    one = ladder_finals(studies, ["short", "mid"], levels=3)
    one = one[one["seed"] == 0]
    assert budget_ladder(one, levels=3).set_index(["study", "run"]).loc[("mid", "flat"), "L3 gain"] == \
        "+10.0 (n=1, no interval)"


def _eval_rows(with_boot_for):
    rows = []
    for run, seed in (("flat", 0), ("flat", 1), ("bhccm_hsc", 0), ("bhccm_hsc", 1)):
        v = 0.40 + 0.02 * seed
        row = {"run": run, "seed": seed, "mIoU_L1": v, "mIoU_L1_present": v, "mIoU_L1_per_image": v}
        if (run, seed) in with_boot_for:
            row |= {"mIoU_L1_boot_lo": v - 0.03, "mIoU_L1_boot_hi": v + 0.03}
        rows.append(row)
    return pd.DataFrame(rows)


def test_split_analysed_keeps_each_table_on_one_set_of_seeds():
    from hierars.project.fidelity import evaluation_table, split_analysed

    # flat's seed 0 was analysed before the bootstrap existed: a mixed table would count it in "seeds" and "mIoU"
    # but not in the bootstrap interval
    df = _eval_rows({("flat", 1), ("bhccm_hsc", 0), ("bhccm_hsc", 1)})
    analysed, older = split_analysed(df, levels=1)
    assert list(zip(older["run"], older["seed"], strict=True)) == [("flat", 0)] and len(analysed) == 3
    with pytest.raises(ValueError, match="split_analysed"):
        evaluation_table(df, levels=1)
    ev = evaluation_table(analysed, levels=1)
    assert ev.loc[("flat", "L1"), "seeds"] == 1 and ev.loc[("flat", "L1"), "mIoU"] == pytest.approx(42.0)
    assert ev.loc[("flat", "L1"), "bootstrap 95 %"] == "[39.0, 45.0]"
    # no row analysed (the column is absent): every row is older, none is lost silently
    none_analysed, all_older = split_analysed(_eval_rows(set()), levels=1)
    assert none_analysed.empty and len(all_older) == 4
    assert split_analysed(pd.DataFrame(), levels=1)[1].empty


def test_pool_curves_joins_independent_samples_of_one_recipe(tmp_path):
    from hierars.project.fidelity import pool_curves

    studies = {}
    for profile, seeds, gain in (("a", (0, 1, 2), 0.02), ("b", (3, 4, 5), 0.00)):
        for seed in seeds:
            noise = 0.003 * seed
            _write(tmp_path / profile, "flat", seed, [(450, 0.2), (900, 0.25 + noise)])
            _write(tmp_path / profile, "bhccm_hsc", seed, [(450, 0.2), (900, 0.25 + noise + gain + 0.002 * seed)])
        studies[profile] = load_curves(tmp_path / profile, ["flat", "bhccm_hsc"])
    pooled = pool_curves(studies, ["a", "b"])
    assert sorted(pooled["flat"]["seed"].unique()) == [0, 1, 2, 3, 4, 5]
    assert set(pooled["bhccm_hsc"]["study"]) == {"a", "b"}
    table = final_table(pooled, levels=3)
    # pooled difference: mean of +2 (seeds 0-2) and 0 (seeds 3-5) points plus 0.2 * mean seed = +1.5
    assert table.loc["bhccm_hsc", "vs flat L3"].startswith("+1.5 [") and table.loc["bhccm_hsc", "vs flat L3"].endswith(
        "(n=6)")
    with pytest.raises(ValueError, match="at least two"):
        pool_curves(studies, ["a"])
    with pytest.raises(ValueError, match="not loaded"):
        pool_curves(studies, ["a", "c"])
    _write(tmp_path / "c", "flat", 1, [(450, 0.2), (900, 0.3)])  # seed 1 is already in study a
    studies["c"] = load_curves(tmp_path / "c", ["flat"])
    with pytest.raises(ValueError, match="seed 1"):
        pool_curves(studies, ["a", "c"])
    _write(tmp_path / "d", "flat", 9, [(240, 0.2), (480, 0.3)])  # another budget
    studies["d"] = load_curves(tmp_path / "d", ["flat"])
    with pytest.raises(ValueError, match="different budgets"):
        pool_curves(studies, ["a", "d"])
