"""Per-level segmentation metrics from accumulated confusion matrices (method-spec §5).

:class:`HierarchicalMetrics` follows mmseg's ``IoUMetric`` per level: intersections and unions are
accumulated over the whole evaluation set, ignored ground-truth pixels are dropped, a class whose union is
0 (never in the ground truth, never predicted) gets IoU NaN, and mIoU is the nanmean. It also reports
overall accuracy (OA), per-class IoU and the **consistency rate**: the share of labelled pixels whose
predicted labels of all levels form a valid root-to-leaf path of the tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy


class HierarchicalMetrics:
    """Accumulate per-level confusion matrices and the consistency rate.

    Args:
        hierarchy: the label tree (``num_classes``, ``names``, ``ignore_index``, ``path_id``).

    ``confusion[l]`` is an int64 tensor N_l×(N_l+1): rows are ground truth, columns predictions; the extra
    last column counts labelled pixels whose prediction is not a class of that level (e.g. 255).
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.num_classes = tuple(hierarchy.num_classes)
        self.ignore_index = hierarchy.ignore_index
        self.reset()

    def reset(self) -> None:
        """Clear all accumulated counts."""
        self.confusion = [torch.zeros(n, n + 1, dtype=torch.long) for n in self.num_classes]
        self.consistent_pixels = 0
        self.labelled_pixels = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: integer tensor B×L×H×W (or L×H×W) of predicted classes per level.
            target: integer tensor of the same shape; ``ignore_index`` marks unlabelled pixels.
        """
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.ndim == 3 and target.ndim == 3:
            pred, target = pred[None], target[None]
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != len(self.num_classes):
            raise ValueError(
                f"pred and target must both be B×{len(self.num_classes)}×H×W, "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must be integer label tensors (did you pass logits?)")
        pred, target = pred.detach().cpu().long(), target.detach().cpu().long()
        for level, n in enumerate(self.num_classes):
            t, p = target[:, level], pred[:, level]
            valid = (t >= 0) & (t < n)
            bad = valid.logical_not() & (t != self.ignore_index)
            if bad.any():
                raise ValueError(
                    f"target at level {level + 1} has values {torch.unique(t[bad])[:5].tolist()} outside "
                    f"[0, {n - 1}] and not ignore_index={self.ignore_index}"
                )
            t, p = t[valid], p[valid]
            p = torch.where((p >= 0) & (p < n), p, n)  # out-of-range predictions -> extra column
            self.confusion[level] += torch.bincount(t * (n + 1) + p, minlength=n * (n + 1)).view(n, n + 1)
        labelled = (target != self.ignore_index).all(dim=1)
        self.labelled_pixels += int(labelled.sum())
        self.consistent_pixels += int(((self.hierarchy.path_id(pred) >= 0) & labelled).sum())

    def all_reduce(self) -> None:
        """Sum the counts over a ``torch.distributed`` process group (no-op when not initialised)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for cm in self.confusion:
            torch.distributed.all_reduce(cm)
        counts = torch.tensor([self.consistent_pixels, self.labelled_pixels], dtype=torch.long)
        torch.distributed.all_reduce(counts)
        self.consistent_pixels, self.labelled_pixels = int(counts[0]), int(counts[1])

    def compute(self) -> dict[str, Any]:
        """Metrics of everything accumulated so far.

        Returns: dict with per-level lists (index 0 = coarsest level)
            ``"IoU"`` (float64 arrays N_l, NaN where union is 0), ``"mIoU"``, ``"OA"``, ``"mAcc"``
            (nanmean of per-class recall), ``"num_pixels"`` (labelled pixels per level), and the scalar
            ``"consistency"`` (NaN if no pixel was labelled at every level).
        """
        out: dict[str, Any] = {"IoU": [], "mIoU": [], "OA": [], "mAcc": [], "num_pixels": []}
        for cm in self.confusion:
            cm = cm.double().numpy()
            n = cm.shape[0]
            inter = np.diag(cm[:, :n])
            area_label = cm.sum(1)
            iou = iou_per_class(cm)
            with np.errstate(invalid="ignore", divide="ignore"):
                acc = np.where(area_label > 0, inter / area_label, np.nan)
            total = area_label.sum()
            out["IoU"].append(iou)
            out["mIoU"].append(float(_nanmean_rows(iou)))
            out["mAcc"].append(float(_nanmean_rows(acc)))
            out["OA"].append(float(inter.sum() / total) if total > 0 else float("nan"))
            out["num_pixels"].append(int(total))
        out["consistency"] = (
            self.consistent_pixels / self.labelled_pixels if self.labelled_pixels else float("nan")
        )
        return out

    def error_structure(self, level: int = -1) -> dict[str, float]:
        """How hierarchical the errors at ``level`` are: the share of its misclassified labelled pixels whose
        predicted class has the same ancestor as the true class, at each coarser level, against chance.

        Chance: each error goes to another class with probability proportional to how often that class is
        predicted overall (so it reflects the model's class frequencies, not a uniform guess). A benchmark whose
        errors stay within a parent far more often than chance carries hierarchical structure a hierarchical
        model can use (issue 14). Predictions outside the level's classes are not counted as errors here.

        Returns:
            ``{"errors": n, "accuracy": a, "within_L<k>": share, "chance_L<k>": share}`` for every coarser level
            k (1-based), e.g. ``within_L2`` = share of leaf errors inside the true leaf's level-2 parent.
        """
        n_levels = len(self.num_classes)
        level = level % n_levels
        cm = self.confusion[level][:, : self.num_classes[level]].double().numpy()
        off = cm.copy()
        np.fill_diagonal(off, 0.0)
        errors = float(off.sum())
        out = {"errors": errors, "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else float("nan")}
        pred_share = cm.sum(0) / max(cm.sum(), 1.0)
        classes = torch.arange(cm.shape[0])
        for coarse in range(level):
            anc = self.hierarchy.lift(classes, coarse, from_level=level).numpy()
            same = anc[:, None] == anc[None, :]
            out[f"within_L{coarse + 1}"] = float(off[same].sum() / errors) if errors else float("nan")
            chance = 0.0
            for c, n_true in enumerate(cm.sum(1)):
                w = pred_share.copy()
                w[c] = 0.0
                chance += n_true * (w[same[c]].sum() / w.sum() if w.sum() else 0.0)
            out[f"chance_L{coarse + 1}"] = float(chance / cm.sum()) if cm.sum() else float("nan")
        return out

    def to_flat_dict(self, per_class: bool = False) -> dict[str, float]:
        """Flat scalars for a metrics JSON: ``mIoU_L1``…, ``OA_L1``…, ``mAcc_L1``…, ``consistency``.

        With ``per_class=True`` also ``IoU_L<l>_<class name>`` (NaN for classes never seen or predicted).
        """
        res = self.compute()
        flat: dict[str, float] = {}
        for key in ("mIoU", "OA", "mAcc"):
            for level, value in enumerate(res[key]):
                flat[f"{key}_L{level + 1}"] = value
        flat["consistency"] = res["consistency"]
        if per_class:
            for level, iou in enumerate(res["IoU"]):
                for name, value in zip(self.hierarchy.names[level], iou.tolist(), strict=True):
                    flat[f"IoU_L{level + 1}_{name}"] = value
        return flat

    def __repr__(self) -> str:
        res = self.compute()
        miou = ", ".join(f"L{i + 1}={v:.4f}" for i, v in enumerate(res["mIoU"]))
        return f"HierarchicalMetrics(mIoU: {miou}; consistency={res['consistency']:.4f})"


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU of one level's confusion matrix.

    Args:
        confusion: N×(N+1) counts (rows ground truth, columns prediction, last column predictions outside the
            level's classes), as in :attr:`HierarchicalMetrics.confusion`; or a stack S×N×(N+1), one per sample.

    Returns: float64 array N (or S×N): intersection / union, NaN where the union is 0.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    n = cm.shape[-2]
    inter = np.diagonal(cm[..., :n], axis1=-2, axis2=-1)
    union = cm.sum(-1) + cm[..., :n].sum(-2) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def _nanmean_rows(iou: np.ndarray) -> np.ndarray:
    seen = np.isfinite(iou)
    counts = seen.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(seen, iou, 0.0).sum(-1) / counts, np.nan)


def miou_conventions(confusions: np.ndarray) -> dict[str, float]:
    """The same predictions scored under three mIoU conventions in use (issue 14: a reference number whose
    convention is not stated can differ from ours by the convention alone).

    Args:
        confusions: S×N×(N+1) per-sample confusion matrices of one level (see :func:`iou_per_class`).

    Returns:
        ``{"dataset": ..., "present": ..., "per_image": ...}``:
        ``dataset`` — this project's mIoU (mmseg's ``IoUMetric``): the samples' confusions summed, nanmean of the
        per-class IoU (a class predicted somewhere but never in the ground truth counts 0);
        ``present`` — the same sum, averaged only over classes that occur in the ground truth;
        ``per_image`` — each sample's own mIoU (nanmean over the classes in its ground truth or prediction),
        averaged over samples (samples with nothing labelled are skipped).
    """
    cms = np.asarray(confusions, dtype=np.float64)
    if cms.ndim != 3 or cms.shape[-1] != cms.shape[-2] + 1:
        raise ValueError(f"confusions must be S×N×(N+1), got shape {cms.shape}")
    total = cms.sum(0)
    iou = iou_per_class(total)
    present = total.sum(1) > 0
    per_image = _nanmean_rows(iou_per_class(cms))
    return {"dataset": float(_nanmean_rows(iou)),
            "present": float(iou[present].mean()) if present.any() else float("nan"),
            "per_image": float(_nanmean_rows(per_image))}


def bootstrap_miou(confusions: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                   ) -> tuple[float, float]:
    """Percentile interval of the dataset mIoU when the evaluation samples are drawn again with replacement: how
    much the score of one model would move on another validation set of the same size from the same images.

    Args:
        confusions: S×N×(N+1) per-sample confusion matrices of one level (S >= 2).
        n_boot: bootstrap resamples; level: interval coverage in (0, 1); seed: resampling seed.

    Returns: (lo, hi) of the mIoU (fractions, like ``HierarchicalMetrics``).
    """
    cms = np.asarray(confusions, dtype=np.float64)
    if cms.ndim != 3 or cms.shape[0] < 2:
        raise ValueError(f"bootstrap_miou needs S×N×(N+1) with S >= 2 samples, got shape {cms.shape}")
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got level={level}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    s = cms.shape[0]
    counts = np.stack([np.bincount(rng.integers(0, s, s), minlength=s) for _ in range(n_boot)])  # n_boot × S
    totals = np.einsum("bs,snm->bnm", counts.astype(np.float64), cms)
    miou = _nanmean_rows(iou_per_class(totals))
    lo, hi = np.nanquantile(miou, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
