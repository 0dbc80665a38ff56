"""The benchmark suite's smoke run: ``benchmarks/run.py --quick`` writes every section and prints the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_quick_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"meta", "bhccm_vs_flat", "jsps", "translu", "retrieval", "sliding_window", "data_loading",
            "encoders", "hssn_loss", "head_bound", "table"} <= set(report)
    assert report["meta"]["quick"] is True
    fpn = report["bhccm_vs_flat"]["fpn64_convnext_atto_10x128"]
    # BHCCM adds 13C + 1,711 parameters over the flat head for mm5b (C = 64 here): a ratio just above 1
    assert fpn["params"]["bhccm_hsc"] - fpn["params"]["flat_ce"] == 13 * 64 + 1711
    assert fpn["flops_ratio"] > 1.0 and fpn["step_ratio"] > 0
    assert 0 < report["jsps"]["jsps_over_forward"] < 1
    assert list(report["retrieval"]["two_stage_query"]) == ["1000", "10000"]
    sw = report["sliding_window"]["by_window"]  # 256² image, windows 64 and 128 with overlap window // 8
    assert {w: v["windows"] for w, v in sw.items()} == {"64": 25, "128": 9}
    for v in sw.values():  # timings of one quick round on a shared machine: only their sign is stable
        assert v["megapixels_per_s"] > 0 and v["forward_share"] > 0 and v["peak_rss_mb"] > 0
    assert report["data_loading"]["load_over_step"] > 0
    enc = report["encoders"]["steps"]
    assert list(enc)[0] == "tu-convnext_atto" and enc["tu-convnext_atto"]["ratio_to_default"] == 1.0
    assert all(v["median_s"] > 0 and v["params"] > 0 for v in enc.values()) and len(enc) == 2
    hl = report["hssn_loss"]  # both tree-min formulations ran (bench checks they agree) and all four steps
    assert hl["tree_min_fwd_bwd_s"]["now"] > 0 and hl["tree_min_fwd_bwd_s"]["before"] > 0
    assert set(hl["train_step"]) == {"flat_ce", "bhccm_hsc", "hssn", "hssn_before"}
    hb = report["head_bound"]  # the bound arm computes what the current code computes, with fewer tensors
    assert hb["bound_max_abs_difference_to_current"] <= 1e-4
    assert hb["arms"]["bhccm_hsc_bound"] < hb["arms"]["bhccm_hsc"]
    assert set(hb["ratio_to_flat"]) == {"bhccm_hsc", "bhccm_hsc_bound", "bhccm_ce"}
    # the printed table has one row per figure of the JSON's table
    rows = [line for line in res.stdout.splitlines() if line.startswith("| ") and "figure" not in line]
    assert len(rows) == len(report["table"]) >= 12
