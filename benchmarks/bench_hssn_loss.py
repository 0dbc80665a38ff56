"""What the HSSN baseline's tree-min loss costs, before and after its rewrite without boolean masks (issue 15).

In the pipeline's metrics the HSSN run took 0.224 s per iteration against the flat model's 0.156 s and BHCCM + HSC's
0.171 s; the difference was the tree-min loss (method-spec §3). Its first formulation (kept here as
:func:`tree_min_before`, the code of ``hierars.losses.hssn_tree_min_loss`` before the rewrite) built one-hot targets
and took the top-down min with ``torch.minimum`` and the bottom-up max with ``scatter_reduce(..., "amax")``; on CPU
the backward passes of those spend most of their time in boolean masks. The current one
(:func:`hierars.losses.hssn_tree_min_loss`) gives the same values and gradients (``tests/test_losses.py``) with
``relu`` for the min / max and a ``scatter`` for the negative terms.

Measured side by side in one process (interleaved calls, one torch thread, CPU time of the thread):

1. the tree-min loss alone, forward + backward, before vs now, on random logits at the training shape (the upsampled
   logits the loss sees: batch x N_l x size x size for the tree);
2. one whole training step (zero grad, forward, loss, backward, fused AdamW) of the pipeline's models: flat + CE,
   BHCCM + HSC and HSSN + its loss (``hierars.models.build_model("fpn", "tu-convnext_atto", 10, mm5b, ...)``, 64-channel
   FPN, batch 8 of 10 x 64², as ``params.yaml``'s default), HSSN with the current loss and with the one before.

Usage (from the repository root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_hssn_loss.py [--steps 20] [--quick]

Writes ``reports/benchmarks/hssn_loss.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from timing import median_times, random_batch, summary, train_step  # noqa: E402

from hierars import Hierarchy  # noqa: E402
from hierars.atomic import atomic_write_text  # noqa: E402
from hierars.losses import HierarchicalCELoss, HSCLoss, HSSNLoss, hierarchical_ce, hssn_tree_min_loss  # noqa: E402
from hierars.models import build_model  # noqa: E402


def tree_min_before(logits: Sequence[torch.Tensor], labels: torch.Tensor, hierarchy: Hierarchy,
                    eps: float = 1e-8, ignore_index: int = 255) -> torch.Tensor:
    """``hssn_tree_min_loss`` (γ = 0) as it was before the rewrite: one-hot targets, ``torch.minimum``,
    ``scatter_reduce(..., "amax")``. logits: L tensors B×N_l×H×W at the labels' size; labels: B×L×H×W."""
    probs = [torch.sigmoid(z) for z in logits]
    parents = hierarchy.parents
    n_levels = len(probs)
    mcla = [probs[0]]
    for level in range(1, n_levels):
        mcla.append(torch.minimum(probs[level], mcla[level - 1].index_select(1, parents[level])))
    mcmb = [probs[-1]] * n_levels
    for level in range(n_levels - 2, -1, -1):
        child = mcmb[level + 1]
        index = parents[level + 1].view(1, -1, 1, 1).expand_as(child)
        mcmb[level] = probs[level].scatter_reduce(1, index, child, reduce="amax", include_self=True)
    total = torch.zeros(())
    for level in range(n_levels):
        y = labels[:, level].long()
        valid = y != ignore_index
        onehot = F.one_hot(torch.where(valid, y, 0), logits[level].shape[1]).permute(0, 3, 1, 2).float()
        per_pixel = (-onehot * torch.log(mcla[level] + eps)
                     - (1.0 - onehot) * torch.log(1.0 - mcmb[level] + eps)).sum(1) / logits[level].shape[1]
        per_pixel = torch.where(valid, per_pixel, torch.zeros(()))
        total = total + per_pixel.sum() / valid.sum().clamp(min=1)
    return total


class HSSNLossBefore(HSSNLoss):
    """:class:`hierars.losses.HSSNLoss` with :func:`tree_min_before` (the logits come upsampled by the model)."""

    def forward(self, logits, labels):
        return self.tm_weight * tree_min_before(logits, labels, self.hierarchy) + self.ce_weight * hierarchical_ce(
            logits, labels)


def bench(batch: int, size: int, steps: int) -> dict:
    torch.set_num_threads(1)
    h = Hierarchy.builtin("mm5b")
    x, y = random_batch(h, batch, 10, size)
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(batch, n, size, size, generator=g).requires_grad_(True) for n in h.num_classes]
    with torch.no_grad():  # the two agree before they are timed
        now, before = hssn_tree_min_loss(logits, y, h), tree_min_before(logits, y, h)
    torch.testing.assert_close(now, before)

    def loss_call(fn):
        def run() -> None:
            for z in logits:
                z.grad = None
            fn(logits, y, h).backward()
        return run

    loss_t = median_times({"now": loss_call(hssn_tree_min_loss), "before": loss_call(tree_min_before)},
                          warmup=2, steps=steps, clock=time.thread_time)
    loss_s = {k: statistics.median(v) for k, v in loss_t.items()}

    steps_fns = {}
    for name, head, loss in (("flat_ce", "flat", HierarchicalCELoss()), ("bhccm_hsc", "bhccm", HSCLoss(h)),
                             ("hssn", "hssn", HSSNLoss(h)), ("hssn_before", "hssn", HSSNLossBefore(h))):
        torch.manual_seed(0)
        model = build_model("fpn", "tu-convnext_atto", 10, h, head=head, decoder_channels=64).train()
        steps_fns[name] = train_step(model, loss, x, y, lr=1e-4)
    step_t = median_times(steps_fns, warmup=2, steps=steps, clock=time.thread_time)
    step = {k: summary(v) for k, v in step_t.items()}
    flat = step["flat_ce"]["median_s"]
    return {
        "shape": {"batch": batch, "size": size, "tree": h.name, "num_classes": list(h.num_classes)},
        "clock": "thread_time, 1 torch thread", "steps": steps,
        "tree_min_fwd_bwd_s": loss_s, "tree_min_before_over_now": loss_s["before"] / loss_s["now"],
        "train_step": step,
        "step_over_flat": {k: v["median_s"] / flat for k, v in step.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="batch 2 of 32², 3 steps (smoke test)")
    ap.add_argument("--out", type=Path, default=BENCH.parent / "reports" / "benchmarks" / "hssn_loss.json")
    args = ap.parse_args()
    batch, size, steps = (2, 32, 3) if args.quick else (args.batch, args.size, args.steps)
    res = bench(batch, size, steps) | {"quick": args.quick}
    loss = res["tree_min_fwd_bwd_s"]
    print(f"[tree-min loss, fwd + bwd, {batch} x {size}², thread_time] now {loss['now'] * 1e3:.1f} ms, before "
          f"{loss['before'] * 1e3:.1f} ms: {res['tree_min_before_over_now']:.2f}x")
    for name, r in res["train_step"].items():
        print(f"[train step] {name}: {r['median_s']:.3f} s, {res['step_over_flat'][name]:.2f}x flat")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
