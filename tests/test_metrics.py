"""HierarchicalMetrics: mmseg IoU semantics, torchmetrics cross-check, consistency rate, accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from hierars.hierarchy import Hierarchy
from hierars.metrics import HierarchicalMetrics

MM5B = Hierarchy.builtin("mm5b")
IGN = 255


def random_labels(seed, b=3, h=16, w=16, ignore_frac=0.15, skip_leaves=(5, 11)):
    g = torch.Generator().manual_seed(seed)
    fine = torch.randint(0, 18, (b, h, w), generator=g)
    for leaf in skip_leaves:  # classes absent from the GT
        fine[fine == leaf] = 0
    fine[torch.rand(b, h, w, generator=g) < ignore_frac] = IGN
    return torch.stack([MM5B.lift(fine, lv) for lv in range(3)], 1)


def random_pred(seed, b=3, h=16, w=16):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, n, (b, h, w), generator=g) for n in MM5B.num_classes], 1)


def test_miou_matches_torchmetrics():
    meter = HierarchicalMetrics(MM5B)
    tm_iou = [MulticlassJaccardIndex(n, ignore_index=IGN, average="none") for n in MM5B.num_classes]
    tm_acc = [MulticlassAccuracy(n, ignore_index=IGN, average="micro") for n in MM5B.num_classes]
    targets, preds = [], []
    for seed in range(3):
        target, pred = random_labels(seed), random_pred(100 + seed)
        pred[:, 2][pred[:, 2] == 7] = 8  # class 7 never predicted (but present in GT)
        meter.update(pred, target)
        targets.append(target)
        preds.append(pred)
        for lv in range(3):
            tm_iou[lv].update(pred[:, lv], target[:, lv])
            tm_acc[lv].update(pred[:, lv], target[:, lv])
    res = meter.compute()
    target, pred = torch.cat(targets), torch.cat(preds)
    for lv, n in enumerate(MM5B.num_classes):
        valid = target[:, lv] != IGN
        present = torch.tensor(
            [((target[:, lv][valid] == c) | (pred[:, lv][valid] == c)).any() for c in range(n)]
        )
        ref = tm_iou[lv].compute()
        np.testing.assert_allclose(res["IoU"][lv][present.numpy()], ref[present].numpy(), rtol=1e-5)
        assert np.isnan(res["IoU"][lv][~present.numpy()]).all()
        assert res["mIoU"][lv] == pytest.approx(float(ref[present].mean()), rel=1e-5)
        assert res["OA"][lv] == pytest.approx(float(tm_acc[lv].compute()), rel=1e-6)
    # leaves 5 and 11 never appear in the GT; the random predictions hit 5 and 11 (checked), so both count as
    # IoU 0 (a false positive of an absent class is an error, as in mmseg), not NaN
    assert (pred[:, 2][target[:, 2] != IGN] == 5).any() and (pred[:, 2][target[:, 2] != IGN] == 11).any()
    assert res["IoU"][2][5] == 0.0 and res["IoU"][2][11] == 0.0


def test_absent_class_convention():
    """The README's convention, exactly: a class absent from the GT counts as IoU 0 in mIoU if it was predicted on
    a labelled pixel, and is left out (NaN) if it was never predicted; predictions on ignored pixels do not count."""
    tree = MM5B
    n = tree.num_classes[-1]
    fine = torch.zeros(1, 4, 4, dtype=torch.long)  # GT: every labelled pixel is leaf 0
    fine[0, 0, 0] = IGN
    target = torch.stack([tree.lift(fine, lv) for lv in range(len(tree.num_classes))], 1)
    pred = target.clone()
    pred[0, -1, 0, 1] = 1  # leaf 1 predicted once on a labelled pixel, absent from the GT
    pred[0, -1, 0, 0] = 2  # leaf 2 predicted only on the ignored pixel
    meter = HierarchicalMetrics(tree)
    meter.update(pred, target)
    res = meter.compute()
    iou = res["IoU"][-1]
    assert iou[0] == pytest.approx(14 / 15)  # 15 labelled pixels of leaf 0, 14 predicted right
    assert iou[1] == 0.0  # predicted, never in the GT: IoU 0, counted
    assert all(math.isnan(iou[c]) for c in range(2, n))  # never predicted on a labelled pixel: NaN, left out
    assert res["mIoU"][-1] == pytest.approx((14 / 15 + 0.0) / 2)


def test_consistency_rate_and_flat_dict():
    target = random_labels(0, ignore_frac=0.0)
    meter = HierarchicalMetrics(MM5B)
    meter.update(target.clone(), target)
    flat = meter.to_flat_dict()
    assert flat["consistency"] == 1.0
    assert all(flat[f"mIoU_L{lv}"] == 1.0 and flat[f"OA_L{lv}"] == 1.0 for lv in (1, 2, 3))
    assert set(flat) == {f"{k}_L{lv}" for k in ("mIoU", "OA", "mAcc") for lv in (1, 2, 3)} | {"consistency"}
    pred = target.clone()
    bad = torch.zeros_like(target[:, 0], dtype=torch.bool)
    bad[:, :4] = True  # make a quarter of the pixels inconsistent: wrong root for their L2 class
    pred[:, 0] = torch.where(bad, (target[:, 0] + 1) % 4, target[:, 0])
    meter = HierarchicalMetrics(MM5B)
    meter.update(pred, target)
    assert meter.compute()["consistency"] == pytest.approx(0.75)
    # ignored GT pixels do not count
    target_ign = target.clone()
    target_ign[:, :, :4] = IGN
    meter = HierarchicalMetrics(MM5B)
    meter.update(pred, target_ign)
    assert meter.compute()["consistency"] == 1.0
    per_class = meter.to_flat_dict(per_class=True)
    assert "IoU_L3_paddy_field" in per_class and len(per_class) == 10 + sum(MM5B.num_classes)


def test_accumulation_equals_single_update_and_reset():
    t1, t2 = random_labels(1), random_labels(2)
    p1, p2 = random_pred(3), random_pred(4)
    a, b = HierarchicalMetrics(MM5B), HierarchicalMetrics(MM5B)
    a.update(p1, t1)
    a.update(p2, t2)
    b.update(torch.cat([p1, p2]), torch.cat([t1, t2]))
    assert a.to_flat_dict() == b.to_flat_dict()
    a.reset()
    assert all(int(cm.sum()) == 0 for cm in a.confusion)
    assert math.isnan(a.compute()["mIoU"][0]) and math.isnan(a.compute()["consistency"])


def test_out_of_range_prediction_counts_as_error():
    target = random_labels(5, ignore_frac=0.0)
    pred = target.clone()
    pred[:, :, 0, 0] = IGN  # e.g. nodata in a prediction raster
    meter = HierarchicalMetrics(MM5B)
    meter.update(pred, target)
    res = meter.compute()
    n = target[:, 0].numel()
    assert res["OA"][2] == pytest.approx((n - 3) / n)
    assert res["consistency"] == pytest.approx((n - 3) / n)


def test_bad_inputs():
    meter = HierarchicalMetrics(MM5B)
    t = random_labels(0)
    with pytest.raises(ValueError, match="B×3×H×W"):
        meter.update(t[:, :2], t[:, :2])
    with pytest.raises(ValueError, match="logits"):
        meter.update(t.float(), t)
    with pytest.raises(ValueError, match="outside"):
        meter.update(t, torch.full_like(t, 40))


def test_error_structure_counts_errors_within_parents():
    parent = MM5B.lift(torch.arange(18), 1)
    sib = next(c for c in range(1, 18) if parent[c] == parent[0])  # a leaf with leaf 0's parent
    far = next(c for c in range(18) if MM5B.lift(torch.tensor(c), 0) != MM5B.lift(torch.tensor(0), 0))
    fine_t = torch.tensor([0] * 10 + [sib] * 10)  # 20 labelled pixels
    fine_p = torch.tensor([0] * 6 + [sib] * 3 + [far] + [sib] * 10)  # 4 errors: 3 within the parent, 1 far away
    lift = lambda f: torch.stack([MM5B.lift(f, lv) for lv in range(3)], 0)[None, :, None, :]  # noqa: E731
    meter = HierarchicalMetrics(MM5B)
    meter.update(lift(fine_p), lift(fine_t))
    es = meter.error_structure()
    assert es["errors"] == 4 and es["accuracy"] == pytest.approx(16 / 20)
    assert es["within_L2"] == pytest.approx(3 / 4) and es["within_L1"] == pytest.approx(3 / 4)
    # chance: leaf 0's errors go to sib (13/20 of predictions) or far (1/20) -> 13/14 within; sib's to 0 or far
    want = (10 * 13 / 14 + 10 * 6 / 7) / 20
    assert es["chance_L2"] == pytest.approx(want)
    assert set(meter.error_structure(1)) == {"errors", "accuracy", "within_L1", "chance_L1"}


def test_miou_conventions_on_hand_counts():
    from hierars.metrics import bootstrap_miou, iou_per_class, miou_conventions

    # 3 classes (+ out-of-level column). Image a: class 0 (8 px) and class 1 (4 px) all right.
    # Image b: class 0 (10 px), 6 right and 4 predicted as class 2, which is in no ground truth.
    a = np.zeros((3, 4))
    a[0, 0], a[1, 1] = 8, 4
    b = np.zeros((3, 4))
    b[0, 0], b[0, 2] = 6, 4
    cms = np.stack([a, b])
    np.testing.assert_allclose(iou_per_class(cms[1]), [0.6, np.nan, 0.0])
    assert iou_per_class(cms).shape == (2, 3)
    conv = miou_conventions(cms)
    # summed: class 0 14/18, class 1 4/4, class 2 0/4 -> nanmean over the 3 classes
    assert conv["dataset"] == pytest.approx((14 / 18 + 1.0 + 0.0) / 3)
    assert conv["present"] == pytest.approx((14 / 18 + 1.0) / 2)  # class 2 is never in the ground truth
    assert conv["per_image"] == pytest.approx((1.0 + (0.6 + 0.0) / 2) / 2)
    # bootstrap: identical samples -> no spread; different samples -> the point estimate inside the interval
    lo, hi = bootstrap_miou(np.stack([a, a, a]), n_boot=200)
    assert lo == pytest.approx(hi) == pytest.approx(1.0)
    lo, hi = bootstrap_miou(np.stack([a, b] * 5), n_boot=500)
    assert lo < conv["dataset"] < hi
    with pytest.raises(ValueError, match="S >= 2"):
        bootstrap_miou(a[None])
    with pytest.raises(ValueError, match="S×N×"):
        miou_conventions(a)
