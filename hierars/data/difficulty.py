"""How hard is a dataset per level? Per-pixel spectral classifiers (no spatial context).

A pixel classifier sees one pixel's bands only, so its accuracy measures how much each level can
be told apart spectrally. The synthetic benchmark is meant to be easy at the coarse level and
hard at the fine level (siblings share materials and differ by spatial context).

Two classifiers, trained on pixels of the train split and scored on the val split:
nearest class mean (in normalised band space) and multinomial logistic regression on the bands
plus their pairwise normalised differences (torch, full-batch L-BFGS). Both predict the finest
level; coarser levels are lifted through the tree (a pixel classifier trained per level gives
the same picture).

Command line::

    python -m hierars.data.difficulty data/processed --source s2 [--pixels 60000]
"""

from __future__ import annotations

import argparse
import json

import torch

from hierars.data.datasets import build_dataset
from hierars.data.labels import load_hierarchy

__all__ = ["pixel_table", "spectral_accuracy"]


def pixel_table(ds, max_pixels: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_pixels`` labelled pixels from a dataset: (N x C float, N x L long)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    per = max(1, max_pixels // max(1, len(ds)))
    for i in range(len(ds)):
        s = ds[i]
        x = s["image"].flatten(1).T
        y = s["mask"].flatten(1).T
        ok = (y != 255).all(1)
        x, y = x[ok], y[ok]
        if len(x) == 0:
            continue
        idx = torch.randperm(len(x), generator=g)[:per]
        xs.append(x[idx])
        ys.append(y[idx])
    return torch.cat(xs), torch.cat(ys)


def _features(x: torch.Tensor) -> torch.Tensor:
    """Bands plus all pairwise normalised differences (NDVI-like indices) of the raw bands."""
    c = x.shape[1]
    i, j = torch.triu_indices(c, c, 1)
    a, b = x[:, i], x[:, j]
    return torch.cat([x, (a - b) / (a.abs() + b.abs() + 1e-3)], 1)


def spectral_accuracy(data_dir: str, source: str = "s2", hierarchy=None, max_pixels: int = 60000,
                      seed: int = 0) -> dict:  # fmt: skip
    """Per-level pixel accuracy (OA) of the two spectral classifiers; see the module docstring."""
    torch.manual_seed(seed)
    tr = build_dataset(data_dir, "train", hierarchy, source=source, normalize=False)
    va = build_dataset(data_dir, "val", hierarchy, source=source, normalize=False)
    h = tr.hierarchy if hierarchy is None else load_hierarchy(hierarchy)
    xt, yt = pixel_table(tr, max_pixels, seed)
    xv, yv = pixel_table(va, max_pixels, seed + 1)
    ft, fv = _features(xt), _features(xv)
    mu, sd = ft.mean(0), ft.std(0).clamp_min(1e-6)
    ft, fv = (ft - mu) / sd, (fv - mu) / sd
    n_leaf = h.num_classes[-1]
    leaf_t = yt[:, -1]
    out: dict = {"source": source, "train_pixels": len(xt), "val_pixels": len(xv), "levels": {}}
    # nearest class mean on the raw bands (normalised)
    bt, bv = ((xt - xt.mean(0)) / xt.std(0).clamp_min(1e-6)), ((xv - xt.mean(0)) / xt.std(0).clamp_min(1e-6))
    means = torch.stack([bt[leaf_t == c].mean(0) if (leaf_t == c).any() else torch.full_like(bt[0], 1e6)
                         for c in range(n_leaf)])  # fmt: skip
    ncm = torch.cdist(bv, means).argmin(1)
    # logistic regression
    w = torch.zeros(ft.shape[1], n_leaf, requires_grad=True)
    b = torch.zeros(n_leaf, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ft @ w + b, leaf_t) + 1e-4 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        lr = (fv @ w + b).argmax(1)
    for lvl in range(h.num_levels):
        truth = yv[:, lvl]
        row = {"classes": h.num_classes[lvl]}
        for name, pred in (("nearest_mean", ncm), ("logreg", lr)):
            p = h.lift(pred, lvl)
            row[f"{name}_oa"] = round(float((p == truth).float().mean()), 4)
            recalls = [float((p[truth == c] == c).float().mean()) for c in truth.unique()]
            row[f"{name}_mean_class_acc"] = round(sum(recalls) / len(recalls), 4)
        out["levels"][f"L{lvl + 1}"] = row
    # siblings: among pixels whose parent the classifier got right, how often is the child right?
    fine, par = h.num_levels - 1, h.num_levels - 2
    sib = {}
    for g in range(h.num_classes[par]):
        kids = (h.parents[fine] == g).nonzero().flatten()
        sel = (yv[:, par] == g) & (h.lift(lr, par) == g)
        if len(kids) > 1 and sel.sum() > 50:
            sib[h.names[par][g]] = round(float((lr[sel] == yv[sel, fine]).float().mean()), 4)
    out["logreg_sibling_acc_given_parent"] = sib
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--source", default="s2")
    p.add_argument("--hierarchy", default=None)
    p.add_argument("--pixels", type=int, default=60000)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(spectral_accuracy(a.data_dir, a.source, a.hierarchy, a.pixels), indent=1))


if __name__ == "__main__":
    main()
