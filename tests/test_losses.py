"""Losses: spec §2 identity, gradcheck, ignore handling, flat CE, HSSN tree-min against a literal reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hierars.hierarchy import Hierarchy
from hierars.losses import (
    HierarchicalCELoss,
    HSCLoss,
    HSSNLoss,
    hierarchical_ce,
    hsc_loss,
    hssn_tree_min_loss,
    path_kl,
    path_scores,
)

MM5B = Hierarchy.builtin("mm5b")
IGN = 255


def make_batch(seed=0, b=2, h=6, w=5, size=None, dtype=torch.float32, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    size = size or (h, w)
    logits = [torch.randn(b, n, *size, generator=g, dtype=dtype) * 2 for n in MM5B.num_classes]
    fine = torch.randint(0, MM5B.num_classes[-1], (b, h, w), generator=g)
    fine[torch.rand(b, h, w, generator=g) < ignore_frac] = IGN
    labels = torch.stack([MM5B.lift(fine, lv) for lv in range(MM5B.num_levels)], 1)
    return logits, labels


def test_path_scores_vectorised_equals_loop():
    logits, _ = make_batch()
    s = path_scores(logits, MM5B.paths)
    assert s.shape == (2, len(MM5B.paths), 6, 5)
    logp = [F.log_softmax(z, 1) for z in logits]
    for i, path in enumerate(MM5B.paths.tolist()):
        torch.testing.assert_close(s[:, i], sum(logp[lv][:, c] for lv, c in enumerate(path)))


def test_path_kl_equals_spec_identity():
    """Per pixel L_path = Σ_l CE_l + log Σ_{p∈P} Π_l p^l(c_l) (method-spec §2)."""
    logits, labels = make_batch(dtype=torch.float64, ignore_frac=0.0)
    probs = [F.softmax(z, 1) for z in logits]
    ce = sum(F.cross_entropy(z, labels[:, lv], reduction="none") for lv, z in enumerate(logits))
    mass = sum(probs[0][:, a] * probs[1][:, b] * probs[2][:, c] for a, b, c in MM5B.paths.tolist())
    identity = (ce + torch.log(mass)).mean()
    torch.testing.assert_close(path_kl(logits, labels, MM5B), identity)
    # and it equals the explicit KL(onehot(p*) || softmax_P s)
    q = torch.log_softmax(path_scores(logits, MM5B.paths), 1)
    pid = MM5B.path_id(labels)
    torch.testing.assert_close(path_kl(logits, labels, MM5B), -q.gather(1, pid[:, None]).mean())


def test_hsc_is_ce_plus_mu_path_kl_and_module_matches():
    logits, labels = make_batch()
    ce = sum(F.cross_entropy(z, labels[:, lv], ignore_index=IGN) for lv, z in enumerate(logits))
    torch.testing.assert_close(hierarchical_ce(logits, labels), ce)
    torch.testing.assert_close(
        hsc_loss(logits, labels, MM5B, mu=0.5), ce + 0.5 * path_kl(logits, labels, MM5B)
    )
    torch.testing.assert_close(HSCLoss(MM5B, mu=0.5)(logits, labels), hsc_loss(logits, labels, MM5B, mu=0.5))
    w = (0.3, 0.3, 1.0)
    want = sum(
        wi * F.cross_entropy(z, labels[:, lv], ignore_index=IGN) for lv, (wi, z) in enumerate(zip(w, logits))
    )
    torch.testing.assert_close(HierarchicalCELoss(weights=w)(logits, labels), want)


def test_hsc_gradcheck_float64():
    logits, labels = make_batch(b=1, h=3, w=3, dtype=torch.float64, ignore_frac=0.3)
    logits = [z.requires_grad_() for z in logits]
    loss = HSCLoss(MM5B, mu=1.0)
    assert torch.autograd.gradcheck(lambda *zs: loss(list(zs), labels), tuple(logits), fast_mode=True)


def test_logits_upsampled_to_label_size():
    logits, labels = make_batch(h=8, w=8, size=(4, 4))
    up = [F.interpolate(z, size=(8, 8), mode="bilinear", align_corners=False) for z in logits]
    torch.testing.assert_close(HSCLoss(MM5B)(logits, labels), HSCLoss(MM5B)(up, labels))


@pytest.mark.parametrize(
    "loss_fn", [HierarchicalCELoss(), HSCLoss(MM5B), HSSNLoss(MM5B)], ids=lambda m: type(m).__name__
)
def test_ignored_pixels_contribute_nothing(loss_fn):
    logits, labels = make_batch(ignore_frac=0.4)
    ignored = (labels == IGN).all(1)
    assert ignored.any() and not ignored.all()
    changed = [torch.where(ignored[:, None], torch.randn_like(z) * 10, z) for z in logits]
    a = [z.clone().requires_grad_() for z in logits]
    b = [z.clone().requires_grad_() for z in changed]
    la, lb = loss_fn(a, labels), loss_fn(b, labels)
    torch.testing.assert_close(la, lb)
    la.backward()
    lb.backward()
    for za, zb in zip(a, b, strict=True):
        torch.testing.assert_close(za.grad, zb.grad)
        assert torch.all(za.grad.permute(1, 0, 2, 3)[:, ignored] == 0)


@pytest.mark.parametrize(
    "loss_fn", [HierarchicalCELoss(), HSCLoss(MM5B), HSSNLoss(MM5B)], ids=lambda m: type(m).__name__
)
def test_all_ignored_gives_zero_not_nan(loss_fn):
    logits, labels = make_batch()
    labels = torch.full_like(labels, IGN)
    logits = [z.requires_grad_() for z in logits]
    loss = loss_fn(logits, labels)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.all(z.grad == 0) for z in logits)


def test_path_kl_honours_a_custom_ignore_index():
    # ignore_index = 0 is also class 0 of every level: its pixels must leave the path term too
    logits, labels = make_batch(ignore_frac=0.0)
    ignored = (labels == 0).any(1)
    assert ignored.any() and not ignored.all()
    changed = [torch.where(ignored[:, None], torch.randn_like(z) * 10, z) for z in logits]
    torch.testing.assert_close(path_kl(logits, labels, MM5B, ignore_index=0),
                               path_kl(changed, labels, MM5B, ignore_index=0))
    assert not torch.allclose(path_kl(logits, labels, MM5B), path_kl(changed, labels, MM5B))


def test_path_kl_excludes_gt_combinations_outside_the_tree():
    logits, labels = make_batch(ignore_frac=0.0)
    bad = labels.clone()
    # give pixel (0, 0, 0) an L1 label that is not the parent of its L2 label
    bad[0, 0, 0, 0] = (labels[0, 0, 0, 0] + 1) % MM5B.num_classes[0]
    assert MM5B.path_id(bad)[0, 0, 0] == -1
    keep = MM5B.path_id(bad) >= 0
    s = path_scores(logits, MM5B.paths)
    pid = MM5B.path_id(labels)
    nll = s.logsumexp(1) - s.gather(1, pid[:, None])[:, 0]
    torch.testing.assert_close(path_kl(logits, bad, MM5B), nll[keep].mean())


def test_flat_model_trained_with_finest_ce():
    logits, labels = make_batch()
    fine = logits[-1]
    want = F.cross_entropy(fine, labels[:, -1], ignore_index=IGN)
    torch.testing.assert_close(HierarchicalCELoss()([fine], labels), want)
    with pytest.raises(ValueError, match="logits tensors"):
        HSCLoss(MM5B)([fine], labels)


def _hssn_reference(logits, labels, eps=1e-8, gamma=0.0):
    """Literal per-class loops of HSSN's tree-min loss generalised to 3 levels (``gamma``: the focal variant)."""
    sig = [torch.sigmoid(z) for z in logits]
    par = MM5B.parents
    ancestors = lambda lv, c: [(k, int(MM5B.paths[MM5B.paths[:, lv] == c][0, k])) for k in range(lv + 1)]  # noqa: E731
    total = 0.0
    for lv, n in enumerate(MM5B.num_classes):
        y = labels[:, lv]
        valid = y != IGN
        per_pixel = 0.0
        for c in range(n):
            mcla = torch.stack([sig[k][:, a] for k, a in ancestors(lv, c)]).amin(0)
            desc = [(lv, c)]
            frontier = [c]
            for k in range(lv + 1, len(MM5B.num_classes)):
                frontier = [d for d in range(MM5B.num_classes[k]) if int(par[k][d]) in frontier]
                desc += [(k, d) for d in frontier]
            mcmb = torch.stack([sig[k][:, d] for k, d in desc]).amax(0)
            onehot = (y == c).double()
            pos = -onehot * torch.log(mcla + eps) * (1 - mcla) ** gamma
            neg = -(1 - onehot) * torch.log(1 - mcmb + eps) * mcmb**gamma
            per_pixel = per_pixel + pos + neg
        total = total + per_pixel[valid].sum() / valid.sum() / n
    return total


def test_hssn_tree_min_matches_literal_reference():
    logits, labels = make_batch(dtype=torch.float64)
    torch.testing.assert_close(hssn_tree_min_loss(logits, labels, MM5B), _hssn_reference(logits, labels))
    total = HSSNLoss(MM5B, tm_weight=5.0)(logits, labels)
    torch.testing.assert_close(total, 5 * _hssn_reference(logits, labels) + hierarchical_ce(logits, labels))


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_hssn_tree_min_gradients_match_literal_reference(gamma):
    # the loss's min / max written with relu: the gradients of autograd through the literal per-class min / max
    # (no ties among random float64 scores), with ignored pixels and both focal settings
    logits, labels = make_batch(dtype=torch.float64, h=7, w=6)
    assert (labels == IGN).any()
    fast = [z.clone().requires_grad_(True) for z in logits]
    slow = [z.clone().requires_grad_(True) for z in logits]
    value = hssn_tree_min_loss(fast, labels, MM5B, gamma=gamma)
    want = _hssn_reference(slow, labels, gamma=gamma)
    torch.testing.assert_close(value, want)
    value.backward()
    want.backward()
    for got, ref in zip(fast, slow):
        assert ref.grad.abs().sum() > 0
        torch.testing.assert_close(got.grad, ref.grad)


def test_bad_inputs_raise():
    logits, labels = make_batch()
    with pytest.raises(ValueError, match="B×L×H×W"):
        HSCLoss(MM5B)(logits, labels[:, 0])
    with pytest.raises(ValueError, match="integer"):
        HSCLoss(MM5B)(logits, labels.float())
    with pytest.raises(ValueError, match="weights"):
        hierarchical_ce(logits, labels, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="P×3"):
        path_scores(logits, MM5B.paths[:, :2])


def test_paths_cover_every_leaf_once():
    # the vectorised path set is exactly the tree's leaves (strict tree)
    assert sorted(MM5B.paths[:, -1].tolist()) == list(range(MM5B.num_classes[-1]))
    assert all(int(MM5B.parents[lv][p[lv]]) == p[lv - 1] for p in MM5B.paths.tolist() for lv in (1, 2))
    assert len(list(itertools.product(*map(range, MM5B.num_classes)))) > len(MM5B.paths)
