"""The paper's tables and figures from what the other stages wrote (the figures stage, ``notebooks/07_figures``).

Nothing here trains: tables are read from ``reports/metrics/*.json`` (train, transfer, retrieval stages),
``models/<run>/seed<k>/metrics.json`` (per-seed numbers, for paired differences), ``reports/transfer/<exp>/`` and
``reports/retrieval/retrieval.csv``; complexity is computed from the run settings (parameters, forward FLOPs).
Every table carries its provenance: a ``source`` column (which file each row comes from) and a ``seeds`` column;
:func:`seeds_note` says when a row rests on fewer than 3 seeds. Class colours are the tree's
(:meth:`hierars.hierarchy.Hierarchy.palettes`), so a class looks the same in every figure; prediction maps and
the tree legend, and the figures of these tables: :mod:`hierars.plotting_figures`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierars.atomic import atomic_write_text
from hierars.comparison import paired_by_seed
from hierars.plotting import format_pm, paper_tables

__all__ = ["PaperTable", "row_run", "seeds_note", "save_paper_table", "save_skipped_table", "level_tables",
           "complexity_table", "bench_table", "transfer_table", "retrieval_tables"]

#: font sizes of the paper figures (points): readable when a figure is printed at column width
MIN_SEEDS = 3


@dataclass
class PaperTable:
    """One paper table: numeric ``data`` (fractions; ``*_hr`` half-ranges; ``seeds``; ``source``) and how to show it."""

    name: str  # file stem under the output folder
    title: str  # e.g. "Tables II-IV (HieraRS): per-level mIoU, flat vs HSSN vs BHCCM + HSC"
    data: pd.DataFrame
    shown: pd.DataFrame  # formatted strings (what the Markdown file shows)
    source: str  # provenance sentence
    notes: list[str] = field(default_factory=list)


def seeds_note(seeds: Sequence[float], what: str = "rows") -> str:
    """``""`` when every value is >= 3, else a sentence naming the smallest seed count (NaN counts as unknown)."""
    vals = [float(s) for s in seeds]
    few = [v for v in vals if not np.isfinite(v) or v < MIN_SEEDS]
    if not few:
        return ""
    n = min((v for v in few if np.isfinite(v)), default=float("nan"))
    count = "an unknown number of" if not np.isfinite(n) else f"{int(n)}"
    return (f"fewer than {MIN_SEEDS} seeds: {len(few)} of {len(vals)} {what} rest on {count} seed(s); "
            "their ± is a half-range of so few values, not a confidence interval")


def save_paper_table(table: PaperTable, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<name>.csv`` (numeric, with ``seeds`` and ``source`` columns) and ``<name>.md`` (title, provenance,
    notes, the formatted table). Returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{table.name}.csv", out / f"{table.name}.md"
    atomic_write_text(csv_path, table.data.to_csv(index_label="row"))
    notes = "".join(f"> **Note:** {n}\n\n" for n in table.notes if n)
    body = table.shown.to_markdown() if len(table.shown) else "_no rows: the stage that writes them has not run_"
    atomic_write_text(md_path, f"### {table.title}\n\n_Source: {table.source}_\n\n{notes}{body}\n")
    return csv_path, md_path


def save_skipped_table(name: str, title: str, reason: str, out_dir: str | Path) -> Path:
    """``<name>.md`` for a table whose stage skipped itself (no CSV: there are no numbers): the title and a line
    ``skipped: <reason>``. Returns the path."""
    path = Path(out_dir) / f"{name}.md"
    atomic_write_text(path, f"### {title}\n\nskipped: {reason}\n")
    return path


# ------------------------------------------------------------------------------------------------ level tables
def row_run(label: str) -> str:
    """The run name in a row label ``"... [run]"`` (``""`` when there is none)."""
    found = re.findall(r"\[([^\]]+)\]", str(label))
    return found[0] if found else ""


def _per_seed(models_dir: Path, run: str, key: str) -> dict[int, float]:
    out = {}
    for path in sorted((models_dir / run).glob("seed*/metrics.json")):
        m = json.loads(path.read_text())
        if key in m:
            out[int(m.get("seed", path.parent.name[4:]))] = float(m[key])
    return out


def _format_levels(df: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=[re.sub(r" \[[^\]]*\]", "", str(i)) + f" [{row_run(i)}]" for i in df.index])
    for c in [c for c in df.columns if re.fullmatch(r"L\d+", c)]:
        out[f"{c} mIoU (%)"] = [format_pm(v, h) for v, h in zip(df[c], df[f"{c}_hr"], strict=True)]
    for c in [c for c in df.columns if c.startswith("vs ")]:
        out[c] = list(df[c])
    if "consistency" in df:
        out["consistency (%)"] = [format_pm(v, h) for v, h in zip(df["consistency"], df["consistency_hr"],
                                                                  strict=True)]
    out["seeds"] = ["—" if not np.isfinite(v) else str(int(v)) for v in df["seeds"]]
    return out


def level_tables(runs: Mapping[str, Mapping[str, Any]], models_dir: str | Path | None = None,
                 baseline: str = "flat") -> dict[str, PaperTable]:
    """Tables II-IV, VII and IX from :func:`hierars.training.collect_run_metrics` output.

    ``main`` keeps the flat, HSSN and BHCCM (bidirectional) + HSC runs decoded with JSPS (flat: lifted; HSSN: its
    own rule); ``main_argmax`` the same per-level argmax; ``ablation`` (VII) fusion x loss; ``jsps`` (IX) JSPS
    off/on. With ``models_dir``, ``main`` gains the paired per-seed difference to ``baseline`` at every level
    (mean [95 % t interval] and a verdict; :mod:`hierars.comparison`).
    """
    raw = paper_tables(dict(runs))

    def keep_main(label: str) -> bool:
        cfg = runs[row_run(label)]["config"]
        return cfg.head in ("flat", "hssn") or (cfg.fusion == "bidirectional" and cfg.loss == "hsc")

    specs = {
        "main": ("Tables II-IV (HieraRS): per-level mIoU, flat vs HSSN vs BHCCM + HSC (JSPS; flat lifted, HSSN "
                 "its own inference)", raw["main_jsps"], keep_main, "_jsps"),
        "main_argmax": ("Tables II-IV (HieraRS), without JSPS: per-level argmax", raw["main_argmax"], keep_main, ""),
        "ablation": ("Table VII (HieraRS): BHCCM fusion x loss ablation (per-level argmax, no JSPS)",
                     raw["ablation"], None, ""),
        "jsps": ("Table IX (HieraRS): JSPS off / on for every multi-level run", raw["jsps"], None, None),
    }
    out = {}
    for name, (title, df, keep, suffix) in specs.items():
        df = df.loc[[i for i in df.index if keep is None or keep(i)]].copy() if len(df) else df.copy()
        df["source"] = [f"metrics/{row_run(i)}.json" for i in df.index]
        if name == "main" and models_dir is not None and len(df):
            levels = sorted((int(c[1:]) for c in df.columns if re.fullmatch(r"L\d+", c)), reverse=True)
            base_cfg = runs.get(baseline, {}).get("config")
            for lvl in levels:
                col = []
                for label in df.index:
                    run = row_run(label)
                    key = f"mIoU_L{lvl}" + (suffix if runs[run]["config"].head == "bhccm" else
                                            ("_hssn" if runs[run]["config"].head == "hssn" else ""))
                    mine = _per_seed(Path(models_dir), run, key)
                    if base_cfg is None or run == baseline:
                        col.append("—")
                        continue
                    if runs[run]["config"].head == "hssn" and not mine:
                        mine = _per_seed(Path(models_dir), run, f"mIoU_L{lvl}_jsps")
                    base = _per_seed(Path(models_dir), baseline, f"mIoU_L{lvl}")
                    if not set(mine) & set(base):
                        col.append("no paired seeds")
                        continue
                    diff = paired_by_seed(mine, base)
                    col.append(diff.format() if diff.n >= 2 else f"{100 * diff.mean:+.1f} (1 paired seed: no interval)")
                df[f"vs {baseline}, L{lvl}"] = col
        note = seeds_note(list(df["seeds"])) if len(df) else ""
        notes = [note] + (["differences: paired by seed, mean [95 % t interval] in mIoU points; an interval "
                           "containing 0 means no measurable difference"] if name == "main" else [])
        files = ",".join(dict.fromkeys(row_run(i) for i in df.index))
        source = f"train stage, reports/metrics/{{{files}}}.json (mean ± half-range over seeds; row label [run])"
        if name == "main" and models_dir is not None:
            source += "; paired differences from models/<run>/seed<k>/metrics.json"
        out[name] = PaperTable(name, title, df, _format_levels(df) if len(df) else df, source, notes)
    return out


# ------------------------------------------------------------------------------------------------ complexity
def complexity_table(configs: Mapping[str, Any], hierarchy, in_channels: int, sizes: Sequence[int] = (64, 512),
                     metrics: Mapping[str, Mapping[str, float]] | None = None) -> PaperTable:
    """Table VIII: parameters (whole model and head) and forward FLOPs per image of each run's model.

    ``configs``: run -> ``TrainConfig``; models are built untrained (``hierars.training.build_run_model``) on
    ``in_channels`` bands, FLOPs counted by ``torch.utils.flop_counter`` (2 per multiply-add) on a
    ``1 x in_channels x s x s`` input for each ``s`` in ``sizes``. ``metrics`` (run -> aggregate metrics) adds the
    training step time measured by the train stage (``seconds_per_iter``, mean ± half-range over seeds).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hierars.training import build_run_model

    rows, shown = {}, {}
    for run, cfg in configs.items():
        model = build_run_model(cfg.model_copy(update={"pretrained": None}), hierarchy, in_channels).eval()
        head = getattr(model, "segmentation_head", None)
        row: dict[str, float] = {"params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                                 "head_params_M": (sum(p.numel() for p in head.parameters()) / 1e6
                                                   if head is not None else float("nan"))}
        for s in sizes:
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                model(torch.zeros(1, in_channels, s, s))
            row[f"GFLOPs_{s}px"] = fc.get_total_flops() / 1e9
        m = (metrics or {}).get(run, {})
        row["step_s"] = float(m.get("seconds_per_iter", float("nan")))
        row["step_s_hr"] = float(m.get("seconds_per_iter_hr", float("nan")))
        row["seeds"] = float(m.get("n_seeds", float("nan")))
        label = f"{cfg.head} head, {cfg.loss} loss [{run}]"
        rows[label] = row
        shown[label] = {"params (M)": f"{row['params_M']:.3f}", "head params (M)": f"{row['head_params_M']:.4f}",
                        **{f"GFLOPs @ {s}²": f"{row[f'GFLOPs_{s}px']:.3f}" for s in sizes},
                        "train step (s)": format_pm(row["step_s"], row["step_s_hr"], scale=1.0),
                        "seeds": "—" if not np.isfinite(row["seeds"]) else str(int(row["seeds"]))}
    df = pd.DataFrame.from_dict(rows, orient="index")
    flat = [i for i, cfg in zip(df.index, configs.values(), strict=True) if cfg.head == "flat"]
    shown_df = pd.DataFrame.from_dict(shown, orient="index")
    if flat:  # the overhead of each head over the flat one, as the paper reports it
        big = f"GFLOPs_{max(sizes)}px"
        shown_df["params vs flat"] = [f"{100 * (v / df.loc[flat[0], 'params_M'] - 1):+.2f} %" for v in df["params_M"]]
        shown_df[f"FLOPs vs flat @ {max(sizes)}²"] = [f"{100 * (v / df.loc[flat[0], big] - 1):+.2f} %" for v in df[big]]
    df["source"] = ["computed from train settings" + (f"; step time: metrics/{row_run(i)}.json" if metrics else "")
                    for i in df.index]
    return PaperTable("complexity", "Table VIII (HieraRS): complexity of BHCCM vs the flat head (and HSSN)", df,
                      shown_df,
                      f"parameters and FLOPs computed from the `train` settings ({in_channels} bands, untrained "
                      "weights, torch.utils.flop_counter, 2 FLOPs per multiply-add); step time = the train "
                      "stage's measured seconds per iteration on this machine (shared cores: pessimistic, noisy)",
                      [seeds_note(list(df["seeds"]), "step times")])


def bench_table(path: str | Path) -> PaperTable:
    """Table VIII as measured side by side by ``benchmarks/run.py`` (``reports/bench.json``, section
    ``bhccm_vs_flat``): per setting, parameters, forward GFLOPs and median training-step time of flat + CE and
    BHCCM + HSC, and their ratios (interleaved steps, same inputs and threads: the ratio is the robust number);
    where the file has it, where BHCCM + HSC's extra step time goes (``extra_ms``: the level heads and fusion, the
    upsampling of every level's logits, the loss, and the rest), each part BHCCM's minus flat's.

    Raises:
        ValueError: the file has no ``bhccm_vs_flat`` section.
    """
    data = json.loads(Path(path).read_text())
    section = data.get("bhccm_vs_flat")
    if not isinstance(section, dict) or not section:
        raise ValueError(f"{path}: no `bhccm_vs_flat` section (run benchmarks/run.py)")
    n_threads = data.get("meta", {}).get("threads")
    # the pipeline's seed workers train with one thread each; with more, the heads' many small operations cost more
    threads = f", {n_threads} torch thread{'s' * (n_threads != 1)}" if n_threads else ""
    rows, shown = {}, {}
    for name, r in section.items():
        g, st = r["forward_gflops_per_image"], r["step_s"]
        rows[name] = {"size": r["size"], "batch": r["batch"], "params_flat": r["params"]["flat_ce"],
                      "params_bhccm": r["params"]["bhccm_hsc"], "GFLOPs_flat": g["flat"], "GFLOPs_bhccm": g["bhccm"],
                      "step_s_flat": st["flat_ce"], "step_s_bhccm": st["bhccm_hsc"], "params_ratio": r["params_ratio"],
                      "flops_ratio": r["flops_ratio"], "step_ratio": r["step_ratio"], "source": Path(path).name}
        shown[name] = {"input": f"{r['size']}² px, batch {r['batch']}",
                       "params (M) flat / BHCCM": f"{r['params']['flat_ce'] / 1e6:.3f} / {r['params']['bhccm_hsc'] / 1e6:.3f}",
                       "GFLOPs / image flat / BHCCM": f"{g['flat']:.3f} / {g['bhccm']:.3f}",
                       "step (s) flat / BHCCM": f"{st['flat_ce']:.3f} / {st['bhccm_hsc']:.3f}",
                       "BHCCM / flat: params, FLOPs, step": f"{r['params_ratio']:.4f}, {r['flops_ratio']:.4f}, "
                                                           f"{r['step_ratio']:.2f}"}
        extra = r.get("extra_ms")  # where the extra step time goes (benchmarks since 4 December 2026)
        if extra:
            rows[name] |= {f"extra_ms_{k}": v for k, v in extra.items()}
            shown[name]["extra step (ms): " + " / ".join(extra)] = " / ".join(f"{v:.1f}" for v in extra.values())
    return PaperTable("complexity_bench", "Table VIII (HieraRS), measured: BHCCM + HSC vs flat + CE side by side",
                      pd.DataFrame.from_dict(rows, orient="index"), pd.DataFrame.from_dict(shown, orient="index"),
                      f"benchmarks/run.py, reports/{Path(path).name} (median step times of interleaved steps{threads} on this "
                      "machine's shared cores; absolute times pessimistic, the ratios less so)", _bound_notes(data))


def _bound_notes(data: dict) -> list[str]:
    """A note from the file's ``head_bound`` section (``benchmarks/bench_head_bound.py``), if it has one: the FPN-64
    step ratio of the current code beside its bound without weight-side work and without HSC's path term."""
    hb = data.get("head_bound")
    if not isinstance(hb, dict) or "ratio_to_flat" not in hb:
        return []

    def fmt(arm: str) -> str:
        r = hb["ratio_to_flat"][arm]
        return f"{r['mean']:.3f}" + (f" [{r['lo95']:.3f}, {r['hi95']:.3f}]" if r.get("lo95") is not None else "")

    return [f"FPN-64 default, step ratio to flat over {hb['rounds']} rounds (95 % t): BHCCM + HSC {fmt('bhccm_hsc')}; "
            f"the same with no weight-side work in the head (ready-made packed weights, the bound of any re-layout of "
            f"its parameters) {fmt('bhccm_hsc_bound')}; without HSC's path term {fmt('bhccm_ce')} "
            "(benchmarks/bench_head_bound.py)"]


# ------------------------------------------------------------------------------------------------ transfer
def transfer_table(reports_dir: str | Path, experiment: str, baseline: str = "finetune") -> PaperTable:
    """Tables V / VI / X: one transfer experiment's variants (JSPS mIoU per level, paired difference to
    ``baseline``) from ``reports/metrics/transfer_<exp>.json`` and the per-variant seed counts of
    ``reports/transfer/<exp>/metrics/transfer_<exp>_<variant>.json``.

    Raises:
        FileNotFoundError: the experiment's metrics file is missing (the transfer stage has not run it).
    """
    reports = Path(reports_dir)
    path = reports / "metrics" / f"transfer_{experiment}.json"
    if not path.is_file():
        raise FileNotFoundError(f"transfer experiment {experiment!r}: {path} not found (run its transfer stage)")
    m = json.loads(path.read_text())
    variants = list(dict.fromkeys(k.split("_mIoU_L")[0] for k in m if re.search(r"_mIoU_L\d+$", k)))
    levels = sorted({int(k.rsplit("_L", 1)[1]) for k in m if re.search(r"_mIoU_L\d+$", k)}, reverse=True)
    rows, shown = {}, {}
    for v in variants:
        vpath = reports / "transfer" / experiment / "metrics" / f"transfer_{experiment}_{v}.json"
        seeds = float(json.loads(vpath.read_text()).get("n_seeds", float("nan"))) if vpath.is_file() else float("nan")
        row: dict[str, Any] = {"seeds": seeds}
        srow: dict[str, str] = {}
        for lvl in levels:
            mean, hr = m[f"{v}_mIoU_L{lvl}"], m.get(f"{v}_mIoU_L{lvl}_hr", float("nan"))
            row[f"L{lvl}"], row[f"L{lvl}_hr"] = mean, hr
            srow[f"L{lvl} mIoU (%)"] = format_pm(mean, hr, digits=1)
            d = [m.get(f"{v}_vs_{baseline}_L{lvl}{s}", float("nan")) for s in ("", "_lo", "_hi")]
            row[f"vs_{baseline}_L{lvl}"], row[f"vs_{baseline}_L{lvl}_lo"], row[f"vs_{baseline}_L{lvl}_hi"] = d
        d = [100 * row[f"vs_{baseline}_L{levels[0]}{s}"] for s in ("", "_lo", "_hi")]
        srow[f"vs {baseline}, L{levels[0]}"] = ("—" if not np.isfinite(d[0]) else f"{d[0]:+.1f} (no interval)"
                                                if not np.isfinite(d[1]) else f"{d[0]:+.1f} [{d[1]:+.1f}, {d[2]:+.1f}]")
        srow["seeds"] = "—" if not np.isfinite(seeds) else str(int(seeds))
        row["source"] = f"metrics/transfer_{experiment}.json"
        rows[v], shown[v] = row, srow
    df = pd.DataFrame.from_dict(rows, orient="index")
    return PaperTable(f"transfer_{experiment}", f"Transfer `{experiment}` (HieraRS Tables V / VI / X): TransLU vs "
                      "fine-tuning, JSPS mIoU on the target tree", df, pd.DataFrame.from_dict(shown, orient="index"),
                      f"transfer stage, reports/metrics/transfer_{experiment}.json (mean ± half-range over seeds; "
                      f"difference to {baseline}: paired by seed, 95 % t interval, mIoU points)",
                      [seeds_note(list(df["seeds"]))])


# ------------------------------------------------------------------------------------------------ retrieval
_RETRIEVAL = {"tableIV": "HIR Table IV: all scene classes (relevance = merged scene label)",
              "tableIV_orig": "HIR Table IV, original labels (relevance = scene, or the withheld sub-label)",
              "tableV": "HIR Table V: residential queries (relevance = the withheld density sub-label)"}


def retrieval_tables(csv_path: str | Path) -> dict[str, PaperTable]:
    """HIR Tables IV / V from ``reports/retrieval/retrieval.csv`` (one trained segmenter and TKANet: one seed)."""
    df = pd.read_csv(csv_path)
    missing = {"experiment", "proportions", "method", "queries"} - set(df.columns)
    if missing:
        raise ValueError(f"{csv_path}: retrieval table lacks columns {sorted(missing)}")
    out = {}
    for exp, part in df.groupby("experiment", sort=False):
        data = part.set_index(["proportions", "method"]).drop(columns=["experiment", "key"], errors="ignore")
        data["seeds"], data["source"] = 1.0, "retrieval/retrieval.csv"
        cols = [c for c in data.columns if "@" in c]
        shown = (100 * data[cols]).round(1).assign(queries=data["queries"].astype(int))
        shown.index = [f"{m} ({p})" for p, m in shown.index]
        out[str(exp)] = PaperTable(f"retrieval_{exp}", _RETRIEVAL.get(str(exp), str(exp)) + " (values in %)", data,
                                   shown, "retrieval stage, reports/retrieval/retrieval.csv ('ground truth' rows: "
                                   "stage 2 with true proportions, an oracle)", [seeds_note([1.0], "tables")])
    return out
