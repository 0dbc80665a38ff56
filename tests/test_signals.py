"""SIGINT / SIGTERM during fit: the step finishes, a checkpoint is written, TrainingInterrupted says how to resume,
the previous handlers come back, and the resumed run ends bit-identical to an uninterrupted one."""

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
from torch import nn
from torch.utils.data import Dataset

from hierars import Hierarchy
from hierars.heads import BHCCM
from hierars.losses import HSCLoss
from hierars.training import TrainConfig, fit, load_checkpoint
from hierars.training.signals import StopOnSignal, TrainingInterrupted

ITERATIONS = 10


@pytest.fixture(scope="module")
def tree(trees_dir: Path) -> Hierarchy:
    return Hierarchy.from_yaml(trees_dir / "gid15.yaml")


class Blocks(Dataset):
    """8 samples: 4×4 blocks of random leaves, image = noisy one-hot of the leaf (P×16×16)."""

    def __init__(self, h: Hierarchy) -> None:
        g = torch.Generator().manual_seed(0)
        p = h.num_classes[-1]
        leaves = torch.randint(0, p, (8, 4, 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
        self.masks = torch.stack([torch.stack([h.lift(x, lvl) for lvl in range(h.num_levels)]) for x in leaves])
        self.images = nn.functional.one_hot(leaves, p).permute(0, 3, 1, 2).float()
        self.images += 0.5 * torch.randn(self.images.shape, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i], "meta": {"path": f"tile_{i}.tif"}}


class SignalAt:
    """A loss that sends ``sig`` to this process during the forward pass of call number ``at`` (0-based)."""

    def __init__(self, tree: Hierarchy, sig: int | None, at: int, times: int = 1) -> None:
        self.loss, self.sig, self.at, self.times, self.calls = HSCLoss(tree), sig, at, times, 0

    def __call__(self, logits: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        if self.sig is not None and self.calls == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.sig)
                # standard signals do not queue: two kills before Python runs the handler would be one signal,
                # so let the handler run before the next one (sleep is interrupted by the signal, PEP 475)
                time.sleep(0.2)
        self.calls += 1
        return self.loss(logits, mask)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"iterations": ITERATIONS, "batch_size": 4, "lr": 3e-3, "log_interval": 1, "progress": False,
                          "jsps": False, **kw})


def _run(tree: Hierarchy, out: Path, loss: SignalAt, fit_kw: dict | None = None) -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(tree.num_classes[-1], 8, 3, padding=1), nn.ReLU(), BHCCM(8, tree.num_classes))
    fit(model, loss, Blocks(tree), None, tree, _cfg(), out, **(fit_kw or {}))
    return model


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_after_a_checkpoint_and_resume_is_bit_exact(tree: Hierarchy, tmp_path: Path, sig: int) -> None:
    straight = _run(tree, tmp_path / "straight", SignalAt(tree, None, 0))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {signal.Signals(sig).name} at iteration 4/10") as err:
        _run(tree, tmp_path / "b", SignalAt(tree, sig, at=3))
    assert "Run the same command again" in str(err.value) and str(tmp_path / "b" / "ckpt.pt") in str(err.value)
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored
    saved = load_checkpoint(tmp_path / "b" / "ckpt.pt")
    assert saved["iteration"] == 4 and not saved["metrics"]
    resumed = _run(tree, tmp_path / "b", SignalAt(tree, None, 0))
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_resume_dir_holds_periodic_checkpoints(tree: Hierarchy, tmp_path: Path) -> None:
    """With ``resume_dir``, an interrupted run leaves its checkpoint there (out_dir may be deleted, as dvc does)."""
    work = tmp_path / "resume"
    with pytest.raises(TrainingInterrupted):
        _run(tree, tmp_path / "out", SignalAt(tree, signal.SIGINT, at=5), fit_kw={"resume_dir": work})
    assert not (tmp_path / "out" / "ckpt.pt").exists() and load_checkpoint(work / "ckpt.pt")["iteration"] == 6
    (tmp_path / "out").rename(tmp_path / "deleted")  # what dvc does to a stage's outputs before re-running it
    _run(tree, tmp_path / "out", SignalAt(tree, None, 0), fit_kw={"resume_dir": work})
    final = tmp_path / "out" / "ckpt.pt"
    assert load_checkpoint(final)["iteration"] == ITERATIONS
    assert (work / "ckpt.pt").samefile(final)  # the resume folder keeps a hard link to the finished checkpoint


def test_second_sigint_stops_at_once(tree: Hierarchy, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt) as err:
        _run(tree, tmp_path / "c", SignalAt(tree, signal.SIGINT, at=2, times=2))
    assert not isinstance(err.value, TrainingInterrupted)
    assert not (tmp_path / "c" / "ckpt.pt").exists()  # no checkpoint: the user asked twice


def test_sigterm_after_sigint_still_checkpoints() -> None:
    """jupyter_client sends SIGINT, then SIGTERM 2.5 s later: the SIGTERM must not cancel the checkpoint."""
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == "SIGINT"


def test_process_exits_non_zero_with_the_resume_message(tmp_path: Path) -> None:
    """A script that trains and gets SIGTERM exits non-zero, its stderr says where the checkpoint is."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        from hierars import Hierarchy
        from test_signals import Blocks, SignalAt, _cfg
        from hierars.heads import BHCCM
        from hierars.training import fit
        tree = Hierarchy.builtin("gid15")
        model = torch.nn.Sequential(torch.nn.Conv2d(15, 8, 3, padding=1), BHCCM(8, tree.num_classes))
        fit(model, SignalAt(tree, signal.SIGTERM, at=2), Blocks(tree), None, tree, _cfg(), {str(tmp_path / "o")!r})
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode != 0
    assert "stopped by SIGTERM at iteration 3/10" in res.stderr and "to resume" in res.stderr
    assert load_checkpoint(tmp_path / "o" / "ckpt.pt")["iteration"] == 3


class RandomTransform(Dataset):
    """A dataset whose samples change on every read (a random transform using the global RNG)."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.rand(2, 4, 4), "mask": torch.zeros(3, 4, 4, dtype=torch.long)}


def test_resume_key_and_stale_folders(tree: Hierarchy, tmp_path: Path) -> None:
    from hierars.training.resume import prune_stale_resume, resume_dir, resume_key

    cfg, ds = _cfg(), RandomTransform()
    key = resume_key(cfg, tree, ds, None)
    assert resume_key(cfg, tree, ds, None) == key  # random transforms run under a fixed seed for the digest
    assert resume_key(cfg.model_copy(update={"seed": 3, "eval_interval": 5, "num_workers": 2}), tree, ds, None) == key
    assert resume_key(cfg.model_copy(update={"lr": 1e-4}), tree, ds, None) != key  # changed settings: new folder
    assert resume_key(cfg, Hierarchy.builtin("mm5b"), ds, None) != key
    assert resume_key(cfg, tree, Blocks(tree), None) != key  # other data
    old, new = resume_dir(tmp_path, "flat", "0" * 16, 0), resume_dir(tmp_path, "flat", key, 0)
    old.mkdir(parents=True), new.mkdir(parents=True)
    assert prune_stale_resume(tmp_path, "flat", key) == [old.parent]
    assert new.is_dir() and not old.parent.exists()
