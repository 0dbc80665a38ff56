"""Numbers the notebooks teach with, computed by the package's own code on a real model or batch.

- :func:`bhccm_fusion_trace` hooks a BHCCM head during one forward pass and returns, for one pixel, every term of
  the fusion equations (method-spec §1, Eqs. 1-6) with its number; :func:`fusion_table` lays one level out.
- :func:`hsc_terms`: the parts of the HSC loss (level CE per level, path term) on a batch (Eqs. 16-24), each from
  :mod:`hierars.losses`.

One pixel's tree, path scores, JSPS and argmax are in :mod:`hierars.project.explorer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hierars.levels import as_level_list
from hierars.losses import hierarchical_ce, hsc_loss, path_kl

if TYPE_CHECKING:
    from torch import nn

    from hierars.hierarchy import Hierarchy

__all__ = ["bhccm_fusion_trace", "fusion_table", "hsc_terms"]


@torch.no_grad()
def bhccm_fusion_trace(model: nn.Module, image: torch.Tensor, row: int, col: int) -> dict[str, Any]:
    """Every term of the BHCCM fusion for one pixel, read by forward hooks during one forward pass (eval mode).

    Args:
        model: a :func:`hierars.models.build_model` model whose head is :class:`hierars.heads.BHCCM`.
        image: C×H×W. (row, col): the pixel; the head runs at the decoder's resolution ``h×w`` (before the
            logits are upsampled), so the numbers are those of head cell ``(row·h//H, col·w//W)``.

    Returns: ``{"cell": (r, c), "fusion": str, "F": [N_l arrays] level heads, "F_refined": [F_l'] (c2f outputs),
    "Y": [N_l arrays] the head's outputs, "terms": {"F'_l" / "Y_l" (1-based l): [(label, array), ...]}, the
    summands of each equation, and "max_error": max |Σ terms − hooked output| (≈ 0: the equations are the code)}``.
    """
    from hierars.heads import BHCCM

    head = getattr(getattr(model, "segmentation_head", None), "head", None)
    if not isinstance(head, BHCCM):
        raise ValueError(f"bhccm_fusion_trace needs a model with a BHCCM head, got {type(head).__name__}")
    seen: dict[str, Any] = {}
    # the head's input x (the decoder's features); F_l = head.level_logits(x) in eval mode (no dropout) are exactly
    # the level heads' outputs the fusion received, however level_logits computes them
    hooks = [head.register_forward_pre_hook(lambda _m, i: seen.__setitem__("x", i[0]))]
    for kind in ("c2f", "f2c"):
        for key, mb in (getattr(head, f"{kind}_blocks", None) or {}).items():
            hooks.append(mb.register_forward_hook(
                lambda _m, i, o, k=f"{kind}{key}": seen.__setitem__(k, (i[0], o))))
    hooks.append(head.register_forward_hook(lambda _m, i, o: seen.__setitem__("Y", o)))
    was_training = model.training
    model.eval()
    try:
        model(image[None].to(next(iter(model.parameters())).device))
        level_logits = head.level_logits(seen["x"])
    finally:
        model.train(was_training)
        for hk in hooks:
            hk.remove()
    H, W = image.shape[-2:]
    h, w = seen["Y"][0].shape[-2:]
    r, c = row * h // H, col * w // W
    px = lambda t: t[0, :, r, c].double().cpu().numpy()  # noqa: E731
    L = head.num_levels_out
    F = [px(f) for f in level_logits]
    Y = [px(y) for y in seen["Y"]]
    a = lambda p: float(p.detach())  # noqa: E731
    terms: dict[str, list[tuple[str, np.ndarray]]] = {}
    refined = list(F)
    if head.use_c2f:
        for j in range(1, L):
            t = [(f"β{j + 1}·F{j + 1}", a(head.c2f_beta[str(j)]) * F[j])]
            t += [(f"α{k + 1}{j + 1}·MB{k + 1}{j + 1}(F{k + 1})", a(head.c2f_alpha[f"{k}_{j}"]) * px(seen[f"c2f{k}_{j}"][1]))
                  for k in range(j)]
            terms[f"F'{j + 1}"] = t
            refined[j] = sum(v for _, v in t)
    if head.use_f2c:
        for j in range(L - 1):
            t = [(f"β'{j + 1}·F{j + 1}", a(head.f2c_beta[str(j)]) * F[j])]
            t += [(f"α{k + 1}{j + 1}·MB{k + 1}{j + 1}(F'{k + 1})", a(head.f2c_alpha[f"{k}_{j}"]) * px(seen[f"f2c{k}_{j}"][1]))
                  for k in range(j + 1, L)]
            terms[f"Y{j + 1}"] = t
        terms[f"Y{L}"] = [(f"α{L}·F'{L}", a(head.f2c_alpha_fine) * refined[-1]),
                          (f"β'{L}·F{L}", a(head.f2c_beta[str(L - 1)]) * F[-1])]
    err = 0.0
    for lvl in range(L):  # the output of each level is the sum of its last equation's terms
        key = f"Y{lvl + 1}" if f"Y{lvl + 1}" in terms else f"F'{lvl + 1}"
        if key in terms:
            err = max(err, float(np.abs(sum(v for _, v in terms[key]) - Y[lvl]).max()))
    return {"cell": (r, c), "fusion": head.fusion, "F": F, "F_refined": refined, "Y": Y, "terms": terms,
            "max_error": err}


def fusion_table(trace: dict[str, Any], hierarchy: Hierarchy, level: int):
    """pandas DataFrame for one level (0-based) of :func:`bhccm_fusion_trace`: a row per class, a column per term
    of its equations, the head's logit before (F) and after (Y) the fusion and their softmax."""
    import pandas as pd

    n = hierarchy.num_levels
    cols: dict[str, np.ndarray] = {f"F{level + 1} (head)": trace["F"][level]}
    for key in (f"F'{level + 1}", f"Y{level + 1}"):
        for label, v in trace["terms"].get(key, []):
            cols[f"{key}: {label}"] = v
    cols[f"Y{level + 1} (output)"] = trace["Y"][level]
    for name, z in ((f"softmax F{level + 1}", trace["F"][level]), (f"softmax Y{level + 1}", trace["Y"][level])):
        e = np.exp(z - z.max())
        cols[name] = e / e.sum()
    if not 0 <= level < n:
        raise ValueError(f"level must be in 0..{n - 1}, got {level}")
    return pd.DataFrame(cols, index=pd.Index(hierarchy.names[level], name="class")).round(3)


def hsc_terms(logits: Sequence[torch.Tensor], labels: torch.Tensor, hierarchy: Hierarchy, mu: float = 1.0,
              level_weights: Sequence[float] | None = None) -> dict[str, float]:
    """The parts of L_HSC = Σ_l λ_l CE_l + μ · L_path (Eq. 24) on one batch, each from :mod:`hierars.losses`.

    Args: logits (L tensors B×N_l×h×w), labels B×L×H×W. Returns ``{"CE_L1": …, …, "path": L_path,
    "mu": μ, "sum": Σ λ_l CE_l + μ L_path, "L_HSC": hsc_loss(...)}`` (``sum`` and ``L_HSC`` agree to rounding).
    """
    logits = as_level_list(logits)
    L = len(logits)
    lam = [1.0] * L if level_weights is None else [float(x) for x in level_weights]
    out = {}
    for lvl in range(L):
        onehot = [1.0 if k == lvl else 0.0 for k in range(L)]
        out[f"CE_L{lvl + 1}"] = float(hierarchical_ce(logits, labels, weights=onehot, ignore_index=hierarchy.ignore_index))
    out["path"] = float(path_kl(logits, labels, hierarchy, ignore_index=hierarchy.ignore_index))
    out["mu"] = float(mu)
    out["sum"] = sum(w * out[f"CE_L{lvl + 1}"] for lvl, w in enumerate(lam)) + mu * out["path"]
    out["L_HSC"] = float(hsc_loss(logits, labels, hierarchy, mu=mu, level_weights=level_weights,
                                  ignore_index=hierarchy.ignore_index))
    return out
