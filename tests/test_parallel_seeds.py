"""``train.seed_workers``: seeds trained at once in forked processes give the sequential loop's results.

- every seed's checkpoint (every weight, ``torch.equal``) and metrics equal those of the sequential loop with the
  same thread count per seed (1), for 3 seeds on 2 workers (one worker runs two seeds);
- a failing seed's exception reaches the caller with its message, and later seeds are not started;
- SIGINT to the caller's process group (Ctrl-C) stops every worker after a checkpoint (each worker, in a group
  of its own, gets it once, forwarded), the caller gets TrainingInterrupted, and running again resumes and ends
  with the uninterrupted run's weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_training import BlockDataset, tiny_model

from hierars import Hierarchy
from hierars.training import resolve_run, runs
from hierars.training.parallel import can_fork
from hierars.training.signals import TrainingInterrupted

pytestmark = pytest.mark.skipif(not can_fork(), reason="seed workers are forked (Linux only)")


@pytest.fixture(scope="module")
def tree(trees_dir: Path) -> Hierarchy:
    return Hierarchy.from_yaml(trees_dir / "gid15.yaml")


def _section(**kw) -> dict:
    base = {"iterations": 6, "batch_size": 4, "log_interval": 1, "eval_interval": 3, "progress": False,
            "seeds": [0, 1, 2], "augment": True, "runs": {"mine": {"head": "bhccm", "loss": "hsc"}}}
    base.update(kw)
    return base


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["model"]


def test_parallel_seeds_equal_sequential(tree: Hierarchy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "build_run_model", lambda cfg, h, in_channels: tiny_model(h, cfg.fusion))
    train, val = BlockDataset(tree, jitter=True), BlockDataset(tree, n=3, seed=4)
    results = {}
    for name, kw in {"seq": {"seed_workers": 1, "num_threads": 1}, "par": {"seed_workers": 2, "num_threads": 2}}.items():
        cfg = resolve_run(_section(**kw), "mine")
        results[name] = runs.train_run("mine", cfg, tree, train, val, models_dir=tmp_path / name / "models",
                                       reports_dir=tmp_path / name / "reports")
    seq, par = results["seq"], results["par"]
    assert [m["seed"] for m in par["per_seed"]] == [0.0, 1.0, 2.0]
    for a, b in zip(seq["per_seed"], par["per_seed"], strict=True):
        for key in ("mIoU_L3", "mIoU_L3_jsps", "final_loss", "OA_L1"):
            assert a[key] == b[key], key
    for ca, cb in zip(seq["ckpts"], par["ckpts"], strict=True):
        wa, wb = _weights(ca), _weights(cb)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), ca.parent.name
    # the seeds differ from each other (each worker really trained its own seed)
    w0, w1 = _weights(par["ckpts"][0]), _weights(par["ckpts"][1])
    assert not all(torch.equal(w0[k], w1[k]) for k in w0)
    assert (tmp_path / "par" / "reports" / "metrics" / "mine.json").is_file()


def test_failing_seed_reaches_the_caller(tree: Hierarchy, tmp_path: Path) -> None:
    def build(cfg, in_channels):
        if cfg.seed == 1:
            raise ValueError("seed 1 cannot be built: a bad band list")
        from hierars.losses import HSCLoss

        return tiny_model(tree), HSCLoss(tree)

    cfg = resolve_run(_section(seed_workers=2, num_threads=2, seeds=[0, 1, 2, 3]), "mine")
    with pytest.raises(ValueError, match="seed 1 cannot be built") as err:
        runs.train_run("mine", cfg, tree, BlockDataset(tree), None, models_dir=tmp_path / "m",
                       reports_dir=tmp_path / "r", build=build)
    assert "in the worker of seed 1" in str(err.value.__cause__)
    assert not (tmp_path / "m" / "mine" / "seed3").exists()  # not started after the failure


SCRIPT = textwrap.dedent("""
    import sys, logging
    sys.path.insert(0, {tests!r})
    logging.basicConfig(level=logging.INFO)
    from pathlib import Path
    from test_training import BlockDataset, tiny_model
    from hierars import Hierarchy
    from hierars.training import resolve_run, runs
    runs.build_run_model = lambda cfg, h, in_channels: tiny_model(h, cfg.fusion)
    tree = Hierarchy.from_yaml({tree!r})
    section = {section!r}
    out = Path(sys.argv[1])
    runs.train_run("mine", resolve_run(section, "mine"), tree, BlockDataset(tree, n=24, size=48),
                   BlockDataset(tree, n=3, seed=4), models_dir=out / "models", reports_dir=out / "reports")
    print("DONE", flush=True)
""")


def test_sigint_checkpoints_every_worker_and_resumes(tree: Hierarchy, trees_dir: Path, tmp_path: Path) -> None:
    section = _section(iterations=120, ckpt_interval=20, eval_interval=1000, seeds=[0, 1], seed_workers=2,
                       num_threads=2)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), tree=str(trees_dir / "gid15.yaml"),
                                    section=section))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    resume_root = run_dir / "models" / ".resume" / "mine"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(resume_root.glob("*/seed*/ckpt.pt"))) < 2:
        time.sleep(0.2)
    assert len(list(resume_root.glob("*/seed*/ckpt.pt"))) == 2, "no periodic checkpoints appeared"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGINT received: the seed workers write their checkpoints" in err, err[-3000:]
    # each worker, in its own process group, got the signal once, forwarded by the parent as SIGTERM
    assert err.count("stopped by SIGTERM at iteration") >= 2 and "TrainingInterrupted" in err, err[-3000:]
    assert not (run_dir / "models" / "mine" / "seed0" / "metrics.json").exists()

    again = subprocess.run([sys.executable, str(script), str(run_dir)], capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stderr
    ref_dir = tmp_path / "ref"
    ref = subprocess.run([sys.executable, str(script), str(ref_dir)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    for seed in (0, 1):
        a = _weights(run_dir / "models" / "mine" / f"seed{seed}" / "ckpt.pt")
        b = _weights(ref_dir / "models" / "mine" / f"seed{seed}" / "ckpt.pt")
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        assert all(torch.equal(a[k], b[k]) for k in a), (seed, diff, [ln for ln in (err + again.stderr).splitlines()
                                                                     if "stopped by" in ln or "resuming" in ln])


def test_training_interrupted_pickles() -> None:
    import pickle

    exc = pickle.loads(pickle.dumps(TrainingInterrupted("stopped at 3/10")))
    assert isinstance(exc, TrainingInterrupted) and "3/10" in str(exc)
