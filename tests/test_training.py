"""hierars.training: run configs, deterministic sampling, poly LR, atomic checkpoints, bit-exact resume, evaluate."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from hierars import Hierarchy, atomic
from hierars.heads import BHCCM
from hierars.losses import HSCLoss
from hierars.training import (
    IterationBatchSampler,
    PolyLR,
    TrainConfig,
    aggregate_seeds,
    build_optimizer,
    checkpoint,
    evaluation,
    fit,
    load_checkpoint,
    pad_collate,
    resolve_run,
    run_names,
    runs,
    seed_everything,
)


@pytest.fixture(scope="module")
def tree(trees_dir: Path) -> Hierarchy:
    return Hierarchy.from_yaml(trees_dir / "gid15.yaml")


class BlockDataset(Dataset):
    """In-memory dict samples: 4×4 blocks of random leaves, image = noisy one-hot of the leaf (C = P).

    ``jitter=True`` adds torch/numpy-random noise on every read, like a random transform would.
    """

    def __init__(self, h: Hierarchy, n: int = 12, size: int = 32, jitter: bool = False, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        p = h.num_classes[-1]
        leaves = torch.randint(0, p, (n, size // 4, size // 4), generator=g)
        leaves = leaves.repeat_interleave(4, 1).repeat_interleave(4, 2)
        leaves[:, :2, :2] = 255  # a few ignored pixels
        self.masks = torch.stack([torch.stack([h.lift(x, lvl) for lvl in range(h.num_levels)]) for x in leaves])
        onehot = torch.nn.functional.one_hot(leaves.clamp(max=p - 1), p).permute(0, 3, 1, 2).float()
        self.images = onehot + 0.5 * torch.randn(onehot.shape, generator=g)
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        img = self.images[i]
        if self.jitter:
            import numpy as np

            img = img + 0.1 * torch.rand(img.shape) + float(np.random.rand())  # noqa: NPY002 (a transform using the global RNG)
        return {"image": img, "mask": self.masks[i], "meta": {"index": i}}


def tiny_model(h: Hierarchy, fusion: str = "bidirectional") -> nn.Module:
    """Conv feature extractor + BHCCM (which has dropout: exercises the global RNG)."""
    return nn.Sequential(nn.Conv2d(h.num_classes[-1], 8, 3, padding=1), nn.ReLU(),
                         BHCCM(8, h.num_classes, fusion=fusion))


def cfg_for(**kw) -> TrainConfig:
    base = dict(iterations=8, batch_size=4, lr=3e-3, eval_interval=0, log_interval=2, progress=False,
                augment=True, jsps=True)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------------------ config
def test_resolve_run_merges_and_validates() -> None:
    section = {"encoder": "resnet18", "iterations": 50,
               "runs": {"flat": {"head": "flat", "loss": "ce"}, "bhccm_hsc": {"head": "bhccm", "mu": 0.5}}}
    cfg = resolve_run(section, "flat")
    assert (cfg.head, cfg.loss, cfg.encoder, cfg.iterations) == ("flat", "ce", "resnet18", 50)
    assert resolve_run(section, "bhccm_hsc").mu == 0.5
    assert run_names(section) == ["flat", "bhccm_hsc"]
    with pytest.raises(ValueError, match="not in params 'train.runs'"):
        resolve_run(section, "nope")
    with pytest.raises(ValueError, match=r"train\.runs\.bad\.lerning_rate: unknown key"):
        resolve_run({**section, "runs": {"bad": {"lerning_rate": 1}}}, "bad")
    with pytest.raises(ValueError, match="hssn"):
        TrainConfig(head="hssn", loss="ce")
    with pytest.raises(ValueError, match="flat head"):
        TrainConfig(head="flat", loss="hsc")
    assert TrainConfig(seeds=[3, 4]).seed_list == [3, 4] and TrainConfig(seed=7).seed_list == [7]


# ---------------------------------------------------------------------------------------- sampling
def test_iteration_sampler_is_stateless_and_covers_epochs() -> None:
    full = list(IterationBatchSampler(10, 4, seed=1, num_iterations=12))
    tail = list(IterationBatchSampler(10, 4, seed=1, num_iterations=12, start=7))
    assert full[7:] == tail
    flat = [idx for batch in full for _, idx in batch]
    for epoch in range(4):  # 48 draws = 4 full epochs of 10 + 8
        assert sorted(flat[epoch * 10:(epoch + 1) * 10]) == list(range(10))
    assert flat[:10] != flat[10:20]  # reshuffled each epoch
    assert [it for it, _ in full[5]] == [5] * 4
    assert list(IterationBatchSampler(10, 4, seed=2, num_iterations=1))[0] != full[0]
    small = list(IterationBatchSampler(3, 4, seed=0, num_iterations=2))  # fewer samples than a batch
    assert all(len(b) == 4 for b in small)


def test_poly_lr_with_warmup() -> None:
    fn = PolyLR(iterations=100, power=1.0)
    assert fn(0) == 1.0 and fn(50) == pytest.approx(0.5) and fn(100) == 0.0
    assert PolyLR(100, 0.9, min_ratio=0.1)(100) == pytest.approx(0.1)
    warm = PolyLR(100, 1.0, warmup_iters=10, warmup_ratio=0.0)
    assert warm(0) == 0.0 and warm(5) == pytest.approx(0.5) and warm(10) == 1.0 and warm(55) == pytest.approx(0.5)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fused_optimizer_matches_the_reference_update(optimizer: str) -> None:
    """build_optimizer's fused kernel gives PyTorch's reference (for-loop) update up to float rounding,
    with both parameter groups (weight decay on weights, none on biases and norms)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 3, 1))
    ref = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    start = [p.detach().clone() for p in net.parameters()]
    cfg = TrainConfig(optimizer=optimizer, lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(net, cfg)
    assert all(g.get("fused") for g in fused.param_groups)
    groups = [{"params": [r for r in ref if r.ndim > 1], "weight_decay": 0.1},
              {"params": [r for r in ref if r.ndim <= 1], "weight_decay": 0.0}]
    plain = (torch.optim.AdamW(groups, lr=1e-2, foreach=False) if optimizer == "adamw"
             else torch.optim.SGD(groups, lr=1e-2, momentum=cfg.momentum, foreach=False))
    x = torch.randn(2, 4, 9, 9)
    for _ in range(5):
        for params, opt in ((list(net.parameters()), fused), (ref, plain)):
            opt.zero_grad()
            out = torch.nn.functional.conv2d(torch.nn.functional.group_norm(
                torch.nn.functional.conv2d(x, params[0], params[1]), 2, params[2], params[3]), params[4], params[5])
            out.square().mean().backward()
            opt.step()
    for p, r, p0 in zip(net.parameters(), ref, start, strict=True):
        assert (p - p0).abs().max() > 1e-3  # the steps moved every tensor: the comparison is not vacuous
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)


def test_pad_collate_pads_with_ignore() -> None:
    a = {"image": torch.ones(3, 30, 33), "mask": torch.zeros(2, 30, 33, dtype=torch.long), "meta": {"i": 0}}
    b = {"image": torch.ones(3, 32, 32), "mask": torch.ones(2, 32, 32, dtype=torch.long), "meta": {"i": 1}}
    out = pad_collate([a, b])
    assert out["image"].shape == (2, 3, 32, 64) and out["mask"].shape == (2, 2, 32, 64)
    assert (out["mask"][0, :, 30:] == 255).all() and (out["mask"][0, :, :, 33:] == 255).all()
    assert (out["image"][0, :, 30:] == 0).all() and out["meta"] == [{"i": 0}, {"i": 1}]
    with pytest.raises(ValueError, match="differ in size"):
        pad_collate([{"image": torch.ones(3, 8, 8), "mask": torch.ones(2, 9, 8)}])


# ------------------------------------------------------------------------------------- checkpoints
def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt.pt"
    checkpoint.save_checkpoint(target, {"model": {}, "iteration": 1, "config": {}})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(target, {"model": {}, "iteration": 2, "config": {}})
    assert load_checkpoint(target)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a hierars checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


def _train(tree: Hierarchy, cfg: TrainConfig, out: Path, resume: bool = True) -> nn.Module:
    torch.manual_seed(123)  # model init; fit re-seeds everything else from cfg.seed
    model = tiny_model(tree)
    fit(model, HSCLoss(tree), BlockDataset(tree, jitter=True), None, tree, cfg, out, resume=resume)
    return model


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_bit_exact(tree: Hierarchy, tmp_path: Path, num_workers: int) -> None:
    """8 straight iterations == 4 iterations, new process state, resume for 4 more (torch.equal)."""
    straight = _train(tree, cfg_for(num_workers=num_workers), tmp_path / "a")

    first = _train(tree, cfg_for(num_workers=num_workers, iterations=8, ckpt_interval=4), tmp_path / "b")
    ck = load_checkpoint(tmp_path / "b" / "ckpt.pt")
    assert ck["iteration"] == 8
    # now the real split: stop after 4 by crashing in the 5th step, then resume
    out = tmp_path / "c"
    calls = {"n": 0}

    class CrashAt5(HSCLoss):
        def forward(self, logits, labels):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return super().forward(logits, labels)

    torch.manual_seed(123)
    model = tiny_model(tree)
    with pytest.raises(KeyboardInterrupt):
        fit(model, CrashAt5(tree), BlockDataset(tree, jitter=True), None, tree,
            cfg_for(num_workers=num_workers, ckpt_interval=4), out)
    assert load_checkpoint(out / "ckpt.pt")["iteration"] == 4
    torch.manual_seed(999)  # disturb every global RNG before resuming
    seed_everything(999)
    resumed = tiny_model(tree)  # different init: must be overwritten by the checkpoint
    fit(resumed, HSCLoss(tree), BlockDataset(tree, jitter=True), None, tree,
        cfg_for(num_workers=num_workers, ckpt_interval=4), out)

    for (name, a), b, c in zip(straight.state_dict().items(), first.state_dict().values(),
                               resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
        assert torch.equal(a, c), name
    assert (tmp_path / "a" / "curve.csv").read_text() == (out / "curve.csv").read_text()
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8]
    assert float(rows[0]["lr"]) == pytest.approx(3e-3 * (1 - 1 / 8))


def test_training_changes_with_seed_and_learns(tree: Hierarchy, tmp_path: Path) -> None:
    a = _train(tree, cfg_for(seed=0), tmp_path / "s0")
    b = _train(tree, cfg_for(seed=1), tmp_path / "s1")
    assert not torch.equal(a[0].weight, b[0].weight)
    rows = list(csv.DictReader((tmp_path / "s0" / "curve.csv").open()))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_resume_refuses_changed_settings(tree: Hierarchy, tmp_path: Path) -> None:
    _train(tree, cfg_for(iterations=2, log_interval=1), tmp_path)
    with pytest.raises(ValueError, match="lr: 0.003 -> 0.001"):
        _train(tree, cfg_for(iterations=2, log_interval=1, lr=1e-3), tmp_path)
    _train(tree, cfg_for(iterations=2, log_interval=1, lr=1e-3), tmp_path, resume=False)  # fresh start is fine


def test_finished_checkpoint_is_not_retrained(tree: Hierarchy, tmp_path: Path) -> None:
    _train(tree, cfg_for(iterations=2, log_interval=1), tmp_path)
    first = json.loads((tmp_path / "metrics.json").read_text())
    (tmp_path / "metrics.json").unlink()

    class Never(HSCLoss):
        def forward(self, logits, labels):
            raise AssertionError("should not train")

    fit(tiny_model(tree), Never(tree), BlockDataset(tree), None, tree, cfg_for(iterations=2, log_interval=1), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == first


def test_fit_rejects_bad_input(tree: Hierarchy, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        fit(tiny_model(tree), HSCLoss(tree), torch.utils.data.Subset(BlockDataset(tree), []), None, tree, cfg_for(),
            tmp_path)

    class NaNLoss(HSCLoss):
        def forward(self, logits, labels):
            return super().forward(logits, labels) * float("nan")

    with pytest.raises(FloatingPointError, match="iteration 0"):
        fit(tiny_model(tree), NaNLoss(tree), BlockDataset(tree), None, tree, cfg_for(), tmp_path)


def test_aggregate_seeds() -> None:
    agg = aggregate_seeds([{"mIoU_L1": 0.5, "seed": 0.0}, {"mIoU_L1": 0.7, "seed": 1.0}])
    assert agg == {"mIoU_L1": pytest.approx(0.6), "mIoU_L1_hr": pytest.approx(0.1), "n_seeds": 2.0}
    with pytest.raises(ValueError):
        aggregate_seeds([])


# ---------------------------------------------------------------------------------------- evaluate
class OracleModel(nn.Module):
    """Maps the one-hot leaf image to per-level logits through the tree (a near-perfect predictor)."""

    def __init__(self, h: Hierarchy) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        for lvl, n in enumerate(h.num_classes):
            conv = nn.Conv2d(h.num_classes[-1], n, 1, bias=False)
            w = torch.zeros(n, h.num_classes[-1], 1, 1)
            w[h.paths[:, lvl], torch.arange(h.num_classes[-1])] = 10.0
            conv.weight.data.copy_(w)
            self.convs.append(conv)

    def forward(self, x):
        return [c(x) for c in self.convs]


def test_evaluate_and_fit_metrics(tree: Hierarchy, tmp_path: Path) -> None:
    pytest.importorskip("hierars.metrics")
    ds = BlockDataset(tree, n=4)
    ds.images = torch.nn.functional.one_hot(ds.masks[:, -1].clamp(max=14), 15).permute(0, 3, 1, 2).float()
    res = evaluation.evaluate_modes(OracleModel(tree), ds, tree, ("argmax", "jsps"), batch_size=3, progress=False)
    for mode in ("argmax", "jsps"):
        for lvl in (1, 2, 3):
            assert res[mode][f"mIoU_L{lvl}"] == pytest.approx(1.0), (mode, lvl)
    assert evaluation.evaluate(OracleModel(tree), ds, tree, "jsps", progress=False)["mIoU_L3"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown inference mode"):
        evaluation.evaluate(OracleModel(tree), ds, tree, "mode_x")

    cfg = cfg_for(iterations=4, eval_interval=2, log_interval=2)
    metrics = fit(tiny_model(tree), HSCLoss(tree), BlockDataset(tree), BlockDataset(tree, n=3, seed=5), tree,
                  cfg, tmp_path, metrics_path=tmp_path / "m" / "run.json", curve_path=tmp_path / "run.csv")
    saved = json.loads((tmp_path / "m" / "run.json").read_text())
    assert saved == pytest.approx(metrics, nan_ok=True)
    for key in ("mIoU_L1", "mIoU_L3", "mIoU_L1_jsps", "mIoU_L3_jsps", "train_seconds", "iteration"):
        assert key in saved, key
    rows = list(csv.DictReader((tmp_path / "run.csv").open()))
    assert [r["iteration"] for r in rows] == ["2", "4"] and "val_mIoU_L3_jsps" in rows[0]
    assert os.path.exists(tmp_path / "ckpt.pt")


def test_train_run_seeds_collect_and_predict(tree: Hierarchy, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "build_run_model", lambda cfg, h, in_channels: tiny_model(h, cfg.fusion))
    section = {"iterations": 2, "batch_size": 4, "log_interval": 1, "progress": False, "seeds": [0, 1],
               "runs": {"mine": {"head": "bhccm", "loss": "hsc"}, "missing": {"head": "flat", "loss": "ce"}}}
    cfg = resolve_run(section, "mine")
    res = runs.train_run("mine", cfg, tree, BlockDataset(tree), BlockDataset(tree, n=3, seed=4),
                           models_dir=tmp_path / "models", reports_dir=tmp_path / "reports")
    agg = json.loads((tmp_path / "reports" / "metrics" / "mine.json").read_text())
    per = [r["mIoU_L3_jsps"] for r in res["per_seed"]]
    assert agg["n_seeds"] == 2 and agg["mIoU_L3_jsps"] == pytest.approx(sum(per) / 2)
    assert agg["mIoU_L3_jsps_hr"] == pytest.approx(abs(per[0] - per[1]) / 2)
    rows = list(csv.DictReader((tmp_path / "reports" / "plots" / "mine_curve.csv").open()))
    assert sorted({r["seed"] for r in rows}) == ["0", "1"]
    assert [p.parent.name for p in res["ckpts"]] == ["seed0", "seed1"]

    found = runs.collect_run_metrics(section, tmp_path / "reports")
    assert list(found) == ["mine"] and found["mine"]["config"].loss == "hsc"

    model = tiny_model(tree)
    model.load_state_dict(load_checkpoint(res["ckpts"][0])["model"])
    samples = evaluation.predict_samples(model, BlockDataset(tree, n=3), tree, [0, 2])
    assert [s["preds"]["jsps"].shape for s in samples] == [(3, 32, 32)] * 2
    assert (tree.path_id(samples[0]["preds"]["jsps"]) >= 0).all()  # JSPS is always a valid path
    with pytest.raises(ValueError, match="plain non-empty name"):
        runs.train_run("a/b", cfg, tree, BlockDataset(tree), None, models_dir=tmp_path, reports_dir=tmp_path)
