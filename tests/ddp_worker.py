"""Training job for tests/test_distributed.py: ``train_run`` on tiny in-memory data, in one process or under torchrun.

    python tests/ddp_worker.py OUT_DIR BATCH_SIZE                          # one process
    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT_DIR BATCH_SIZE   # DDP (batch per process)

The model is the default profile's architecture (FPN + ``tu-convnext_atto`` + BHCCM, HSC loss) at 32 decoder
channels with every dropout off (smp's FPN decoder has its own ``Dropout2d(0.2)``), and the labels have no
ignored pixels, so that one process with batch ``2B`` and two with ``B`` compute the same mathematics: only the
order of floating-point sums differs. The dataset draws noise from the global RNGs (a random transform), which
``SeededSamples`` makes a function of (seed, iteration, index) on any rank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hierars import Hierarchy
from hierars.training import TrainConfig, build_loss, build_run_model, train_run


class NoisyBlocks(Dataset):
    """``n`` samples {"image": 4×size×size, "mask": 3×size×size} of the gid15 tree, 8-px blocks, no ignore pixels."""

    def __init__(self, h: Hierarchy, n: int, size: int = 64, seed: int = 0, noisy: bool = True) -> None:
        self.noisy = noisy
        g = torch.Generator().manual_seed(seed)
        leaves = torch.randint(0, h.num_classes[-1], (n, size // 8, size // 8), generator=g)
        leaves = leaves.repeat_interleave(8, 1).repeat_interleave(8, 2)
        self.masks = torch.stack([torch.stack([h.lift(x, lvl) for lvl in range(h.num_levels)]) for x in leaves])
        codes = torch.randn(h.num_classes[-1], 4, generator=g)
        self.images = codes[leaves].permute(0, 3, 1, 2) + 0.8 * torch.randn(n, 4, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        if not self.noisy:  # validation: the same sample on every read
            return {"image": self.images[i], "mask": self.masks[i], "meta": {"index": i}}
        noise = 0.1 * torch.randn(self.images[i].shape) + float(np.random.rand()) * 0.05  # noqa: NPY002
        return {"image": self.images[i] + noise, "mask": self.masks[i], "meta": {"index": i}}


def main(out: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    h = Hierarchy.builtin("gid15")
    cfg = TrainConfig(arch="fpn", encoder="tu-convnext_atto", decoder_channels=32, head="bhccm", loss="hsc",
                      dropout=0.0, iterations=6, batch_size=batch_size, lr=1e-3, eval_interval=3, log_interval=1,
                      augment=True, band_jitter=0.05, seeds=[0], num_threads=1, progress=False)

    def build(seed_cfg: TrainConfig, in_channels: int):
        model = build_run_model(seed_cfg, h, in_channels)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.p = 0.0
        return model, build_loss(seed_cfg, h)

    train_run("ddp", cfg, h, NoisyBlocks(h, 16), NoisyBlocks(h, 6, seed=1, noisy=False), models_dir=Path(out) / "models",
              reports_dir=Path(out) / "reports", build=build)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
