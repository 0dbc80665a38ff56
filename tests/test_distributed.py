"""DistributedDataParallel under torchrun: sharded batches, global-batch augmentation, two CPU processes vs one.

The torchrun tests start real processes (gloo backend, 1 thread each); they take about a minute on 2 loaded cores.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hierars.data.transforms import SegAugment
from hierars.training.distributed import DistInfo, env_info, mean_over_ranks, wrap_model
from hierars.training.sampling import IterationBatchSampler, augment_batch

HERE = Path(__file__).resolve().parent
#: Tolerances of 2 processes x batch B against 1 process x batch 2B (same global batch, no dropout, no ignored
#: pixels): only the order of floating-point sums differs (DDP's gradient all-reduce, per-rank loss means).
LOSS_RTOL = 1e-5   # measured: <= 2e-7 relative over 6 AdamW steps
WEIGHT_ATOL = 5e-4  # measured: 2.1e-4 max |difference| over all weights (magnitudes up to ~1); 1.1e-5-2.9e-5
# with F.interpolate instead of levels.resize_bilinear's matmul upsampling, whose GEMM blocking (summation order)
# depends on the batch size (2 per rank vs 4); AdamW's first steps move a weight by ~lr whatever the gradient's
# size, so tiny gradients that differ in rounding give differences of a fraction of lr = 1e-3. A real DDP fault
# (gradients not averaged, a rank on other samples) moves weights by several lr (6 steps: up to 6e-3).


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def test_sampler_shards_are_the_global_batch() -> None:
    single = list(IterationBatchSampler(10, 6, seed=3, num_iterations=5))
    shards = [list(IterationBatchSampler(10, 3, seed=3, num_iterations=5, rank=r, world_size=2)) for r in range(2)]
    for it in range(5):
        assert shards[0][it] + shards[1][it] == single[it]
    resumed = list(IterationBatchSampler(10, 3, seed=3, num_iterations=5, start=2, rank=1, world_size=2))
    assert resumed == shards[1][2:]
    with pytest.raises(ValueError, match="rank 2 outside"):
        IterationBatchSampler(10, 3, seed=3, num_iterations=5, rank=2, world_size=2)


def test_augment_batch_shard_equals_slice_of_global_batch() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(6, 3, 16, 16, generator=g)
    mask = torch.randint(0, 4, (6, 2, 16, 16), generator=g)
    aug = SegAugment(scale=(0.5, 1.0), band_jitter=0.1)
    full_i, full_m = augment_batch(aug, image, mask, seed=5, iteration=7)
    for r in range(3):
        sl = slice(2 * r, 2 * r + 2)
        i, m = augment_batch(aug, image[sl], mask[sl], seed=5, iteration=7, rank=r, world_size=3)
        assert torch.equal(i, full_i[sl]) and torch.equal(m, full_m[sl])
    # without the global-batch draw a shard would get other parameters: the check above can fail
    i, _ = augment_batch(aug, image[2:4], mask[2:4], seed=5, iteration=7)
    assert not torch.equal(i, full_i[2:4])


def test_single_process_helpers_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert env_info() == DistInfo()
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, torch.device("cpu"), DistInfo()) is model
    x = torch.tensor(3.0, requires_grad=True)
    assert mean_over_ranks(x * 2).item() == 6.0
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK=3, WORLD_SIZE=2"):
        env_info()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        env_info()


def _curve(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_the_global_batch(tmp_path: Path) -> None:
    """2 ranks x batch 2 vs 1 process x batch 4 through ``train_run``: loss curve, val metrics, final weights."""
    worker = str(HERE / "ddp_worker.py")
    single = subprocess.Popen([sys.executable, worker, str(tmp_path / "one"), "4"], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ddp = subprocess.run(_torchrun(worker, str(tmp_path / "two"), "2"), env=_env(), capture_output=True, text=True,
                         timeout=600)
    out_single = single.communicate(timeout=600)[0]
    assert single.returncode == 0, out_single[-3000:]
    assert ddp.returncode == 0, (ddp.stdout + ddp.stderr)[-3000:]

    one, two = (_curve(tmp_path / d / "models/ddp/seed0/curve.csv") for d in ("one", "two"))
    assert [r["iteration"] for r in one] == [r["iteration"] for r in two] == [str(i) for i in range(1, 7)]
    for a, b in zip(one, two, strict=True):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=LOSS_RTOL)
        for key in (k for k in a if k.startswith("val_") and a[k]):
            assert float(b[key]) == pytest.approx(float(a[key]), abs=1e-3), key  # sharded + all-reduced eval
    assert float(one[-1]["loss"]) < float(one[0]["loss"])  # it trained

    ckpts = [torch.load(tmp_path / d / "models/ddp/seed0/ckpt.pt", weights_only=True) for d in ("one", "two")]
    assert (ckpts[0]["world_size"], ckpts[1]["world_size"]) == (1, 2)
    w1, w2 = ckpts[0]["model"], ckpts[1]["model"]
    assert w1.keys() == w2.keys()  # saved without DDP's "module." prefix
    diff = max(float((w1[k].double() - w2[k].double()).abs().max()) for k in w1)
    assert diff <= WEIGHT_ATOL, diff
    agg = json.loads((tmp_path / "two/reports/metrics/ddp.json").read_text())
    assert agg["n_seeds"] == 1 and agg["mIoU_L1"] == pytest.approx(float(two[-1]["val_mIoU_L1"]))


@pytest.mark.slow
def test_hierars_train_under_torchrun(tmp_path: Path) -> None:
    """The user entry point: ``torchrun ... hierars train RUN --params FILE`` on prepared synthetic tiles."""
    from hierars.data import prepare
    from hierars.project import prepare_config

    params = yaml.safe_load((HERE / "params_smoke.yaml").read_text())
    params["paths"] = {k: str(tmp_path / k) for k in ("data", "models", "reports")}
    params["prepare"]["synthetic"] = {"n_scenes": 4, "scene_size_m": 1280, "val_every": 2}
    prepare(prepare_config(params), tmp_path / "data" / "processed")
    params["train"].update(iterations=2, eval_interval=0, num_threads=1, progress=False)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params))

    res = subprocess.run(_torchrun("-m", "hierars.project.cli", "train", "bhccm_hsc", "--params", str(pfile)),
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])  # printed once, by rank 0
    assert res.stdout.count('"world_size"') == 1 and summary["world_size"] == 2
    ckpt = torch.load(tmp_path / "models/bhccm_hsc/seed0/ckpt.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["iteration"] == 2
    assert (tmp_path / "reports/metrics/bhccm_hsc.json").is_file()
    assert 0.0 <= summary["mIoU_L1"] <= 1.0

    # the same run in one process would change the global batch: refused, naming the checkpoint
    res1 = subprocess.run([sys.executable, "-m", "hierars.project.cli", "train", "bhccm_hsc", "--params", str(pfile)],
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert res1.returncode == 2
    assert "trained by 2 process(es), this job has 1" in res1.stderr and "ckpt.pt" in res1.stderr
