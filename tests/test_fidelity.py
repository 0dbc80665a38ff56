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
        table.loc["bhccm_hsc", "vs flat L3"].endswith("better")
    assert table.loc["hssn", "vs flat L3"] == "no common seed" and table.loc["flat", "vs flat L3"] == "—"
    budget = budget_table(curves, level=3)
    assert budget.loc[100, "bhccm_hsc − flat"].startswith("-5.0 [") and "worse" in budget.loc[100, "bhccm_hsc − flat"]
    assert "better" in budget.loc[200, "bhccm_hsc − flat"] and "(n=3)" in budget.loc[200, "bhccm_hsc − flat"]
    with pytest.raises(ValueError, match="baseline"):
        budget_table({"bhccm_hsc": curves["bhccm_hsc"]}, level=3)


def test_missing_folder_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="learning_curves.py"):
        load_curves(tmp_path / "nothing", ["flat"])
    (tmp_path / "errors").mkdir()
    for run, seed in (("hssn", 0), ("flat", 1), ("flat", 0), ("other", 0)):
        (tmp_path / "errors" / f"{run}_seed{seed}.json").write_text(json.dumps({"run": run, "seed": seed}))
    df = load_errors(tmp_path, ["flat", "hssn"])
    assert list(zip(df["run"], df["seed"], strict=True)) == [("flat", 0), ("flat", 1), ("hssn", 0)]
