"""The faster BHCCM + HSC code (issue 14, step time) computes what the previous code computed.

Also: the level logits' ×4 upsampling by interpolation matrices (``hierars.levels.resize_bilinear``) equals
``F.interpolate`` / smp's ``nn.Upsample``, values and gradients.

The references below are the previous implementations, kept verbatim in spirit: HSC as one log-softmax per
level, path scores s(p) = Σ_l log softmax(Y_l)[p_l] (B×P×H×W), ``logsumexp_P s − s(p*)`` through autograd;
the Merging Block with its NCHW 7×7 conv, and one 1×1 conv per level head. Values and gradients (of the
logits, of the head's input and of every parameter) must agree to float rounding on random inputs with
ignored pixels, label combinations outside the tree, level weights and several μ.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import hierars.losses as losses_mod
from hierars.heads import BHCCM, FUSIONS, MergingBlock
from hierars.hierarchy import Hierarchy
from hierars.levels import apply_upsampling, resize_bilinear
from hierars.losses import HSCLoss, hsc_loss, path_kl
from hierars.models import build_model

MM5B = Hierarchy.builtin("mm5b")
IGN = 255


# ----------------------------------------------------------------------------- references (previous code)
def _ref_masked_mean(values, valid):
    values = torch.where(valid, values, torch.zeros((), dtype=values.dtype))
    return values.sum() / valid.sum().clamp(min=1).to(values.dtype)


def _ref_nll(logp, y, ignore_index):
    valid = y != ignore_index
    nll = F.nll_loss(logp, torch.where(valid, y, 0), reduction="none")
    return _ref_masked_mean(nll, valid)


def _ref_path_nll(logp, labels, h, ignore_index):
    paths = h.paths
    score = logp[-1].index_select(1, paths[:, -1])
    for level, lp in enumerate(logp[:-1]):
        score = score + lp.index_select(1, paths[:, level])
    pid = h.path_id(labels)
    valid = (pid >= 0) & (labels != ignore_index).all(dim=1)
    target = score.gather(1, pid.clamp(min=0).unsqueeze(1)).squeeze(1)
    return _ref_masked_mean(torch.logsumexp(score, dim=1) - target, valid)


def ref_hsc(logits, labels, h, mu=1.0, weights=None, ignore_index=IGN):
    logits = [F.interpolate(z, size=labels.shape[-2:], mode="bilinear", align_corners=False)
              if z.shape[-2:] != labels.shape[-2:] else z for z in logits]
    logp = [F.log_softmax(z, 1) for z in logits]
    weights = [1.0] * len(logp) if weights is None else weights
    loss = sum(w * _ref_nll(lp, y, ignore_index) for w, lp, y in zip(weights, logp, labels.unbind(1)))
    if mu:
        loss = loss + mu * _ref_path_nll(logp, labels, h, ignore_index)
    return loss


def ref_merging_block(mb: MergingBlock, x):
    proj = mb.align(x)
    mlp = lambda t: mb.fc2(torch.relu(mb.fc1(t)))  # noqa: E731
    channel_att = torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))
    spatial_in = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    spatial_att = torch.sigmoid(F.conv2d(spatial_in.contiguous(), mb.spatial.weight, padding=3))
    return proj * channel_att * spatial_att


def fuse_with(head: BHCCM, feats, block):
    """BHCCM's cross-level fusion (method-spec §1) written out once, with ``block(mb, x)`` as the Merging Block."""
    L = head.num_levels_out
    if head.use_c2f:
        refined = [feats[0]]
        for j in range(1, L):
            out = head.c2f_beta[str(j)] * feats[j]
            for k in range(j):
                out = out + head.c2f_alpha[f"{k}_{j}"] * block(head.c2f_blocks[f"{k}_{j}"], feats[k])
            refined.append(out)
    else:
        refined = feats
    if not head.use_f2c:
        return refined
    outs = []
    for j in range(L - 1):
        out = head.f2c_beta[str(j)] * feats[j]
        for k in range(j + 1, L):
            out = out + head.f2c_alpha[f"{k}_{j}"] * block(head.f2c_blocks[f"{k}_{j}"], refined[k])
        outs.append(out)
    outs.append(head.f2c_alpha_fine * refined[-1] + head.f2c_beta[str(L - 1)] * feats[-1])
    return outs


def ref_bhccm(head: BHCCM, x):
    return fuse_with(head, [hd(head.dropout(x)) for hd in head.heads], ref_merging_block)


# frozen copy of the BHCCM forward as of commit 582f20f (before the grouped Merging Blocks): one MergingBlock
# call per block (nn.AdaptiveAvg/MaxPool2d, channels-last 7×7 conv), level heads as one stacked conv
def frozen_merging_block(mb: MergingBlock, x):
    proj = mb.align(x)
    mlp = lambda t: mb.fc2(torch.relu(mb.fc1(t)))  # noqa: E731
    channel_att = torch.sigmoid(mlp(mb.avg_pool(x)) + mlp(mb.max_pool(x)))
    spatial_in = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    spatial_att = torch.sigmoid(mb.spatial(spatial_in.contiguous(memory_format=torch.channels_last)))
    return proj * channel_att * spatial_att


def frozen_level_logits(head: BHCCM, x):
    x = head.dropout(x)
    weight = torch.cat([hd.weight for hd in head.heads])
    bias = torch.cat([hd.bias for hd in head.heads])
    return list(torch.split(F.conv2d(x, weight, bias), list(head.num_classes), dim=1))


def frozen_fuse(head: BHCCM, feats):
    return fuse_with(head, feats, frozen_merging_block)


# ----------------------------------------------------------------------------- inputs
def make_batch(h=MM5B, seed=0, b=3, size=(12, 10), low=None, dtype=torch.float32, ignore_frac=0.2,
               off_tree_frac=0.1):
    """Random logits (at ``low`` size if given) and B×L×H×W labels with ignored pixels (some at one level
    only) and per-level label combinations that form no path of the tree."""
    g = torch.Generator().manual_seed(seed)
    lsize = low or size
    logits = [(torch.randn(b, n, *lsize, generator=g, dtype=dtype) * 3).requires_grad_(True) for n in h.num_classes]
    fine = torch.randint(0, h.num_classes[-1], (b, *size), generator=g)
    labels = torch.stack([h.lift(fine, lv) for lv in range(h.num_levels)], 1)
    labels[:, :, torch.rand(*size, generator=g) < ignore_frac] = IGN
    labels[:, 0][torch.rand(b, *size, generator=g) < ignore_frac] = IGN  # ignored at the coarse level only
    off = torch.rand(b, *size, generator=g) < off_tree_frac  # a coarse label that is not the leaf's ancestor
    labels[:, 0][off] = (labels[:, 0][off] + 1) % h.num_classes[0]
    return logits, labels


def assert_same(new_val, ref_val, new_grads, ref_grads, atol):
    torch.testing.assert_close(new_val, ref_val, rtol=1e-5, atol=atol)
    for a, b in zip(new_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=atol)


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("mu", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("weights", [None, [0.4, 0.7, 1.3]])
@pytest.mark.parametrize("low", [None, (6, 5)])
def test_hsc_loss_value_and_gradients_match_previous_code(mu, weights, low):
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        logits, labels = make_batch(low=low, dtype=dtype, seed=int(mu * 10) + (weights is None))
        new = hsc_loss(logits, labels, MM5B, mu=mu, level_weights=weights)
        ref = ref_hsc(logits, labels, MM5B, mu=mu, weights=weights)
        assert_same(new, ref, torch.autograd.grad(new, logits), torch.autograd.grad(ref, logits), atol)


def test_path_kl_matches_previous_code_and_module_form():
    logits, labels = make_batch(dtype=torch.float64)
    logp = [F.log_softmax(z, 1) for z in logits]
    new, ref = path_kl(logits, labels, MM5B), _ref_path_nll(logp, labels, MM5B, IGN)
    assert_same(new, ref, torch.autograd.grad(new, logits), torch.autograd.grad(ref, logits), 1e-12)
    torch.testing.assert_close(HSCLoss(MM5B, mu=0.3)(logits, labels), ref_hsc(logits, labels, MM5B, mu=0.3))


def test_hsc_general_paths_branch_matches_previous_code():
    """A tree object whose leaf order differs from the path order exercises the non-identity leaf gather."""
    h = copy.copy(MM5B)
    perm = torch.randperm(len(MM5B.paths), generator=torch.Generator().manual_seed(3))
    h.paths = MM5B.paths[perm]
    lut = torch.full_like(MM5B._path_lut, -1)
    lut[(h.paths * MM5B._strides).sum(1)] = torch.arange(len(h.paths))
    h._path_lut = lut
    assert not torch.equal(h.paths[:, -1], torch.arange(len(h.paths)))
    logits, labels = make_batch(dtype=torch.float64)
    for fn, ref in ((lambda: hsc_loss(logits, labels, h), lambda: ref_hsc(logits, labels, h)),
                    (lambda: path_kl(logits, labels, h),
                     lambda: _ref_path_nll([F.log_softmax(z, 1) for z in logits], labels, h, IGN))):
        a, b = fn(), ref()
        assert_same(a, b, torch.autograd.grad(a, logits), torch.autograd.grad(b, logits), 1e-12)


def test_hsc_custom_backward_passes_gradcheck_and_survives_retain_graph():
    logits, labels = make_batch(b=2, size=(4, 3), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *z: hsc_loss(list(z), labels, MM5B, mu=0.7, level_weights=[1, 2, 3]),
                                    tuple(logits))
    assert torch.autograd.gradcheck(lambda *z: path_kl(list(z), labels, MM5B), tuple(logits))
    loss = hsc_loss(logits, labels, MM5B)
    first = torch.autograd.grad(loss, logits, retain_graph=True)
    second = torch.autograd.grad(loss, logits)  # the backward must not have changed what it saved
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_hsc_all_ignored_is_zero_with_zero_gradients_and_no_nan():
    logits, labels = make_batch()
    labels = torch.full_like(labels, IGN)
    loss = hsc_loss(logits, labels, MM5B)
    assert loss.item() == 0.0
    assert all(torch.equal(g, torch.zeros_like(g)) for g in torch.autograd.grad(loss, logits))


def test_hsc_half_precision_logits_are_upcast_like_before():
    logits, labels = make_batch()
    half = [z.detach().bfloat16().requires_grad_(True) for z in logits]
    new = hsc_loss(half, labels, MM5B)
    ref = ref_hsc([z.float() for z in half], labels, MM5B)
    assert new.dtype == torch.float32
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-6)
    assert all(g.dtype == torch.bfloat16 for g in torch.autograd.grad(new, half))


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize("fusion", FUSIONS)
def test_bhccm_outputs_and_all_gradients_match_previous_code(fusion):
    torch.manual_seed(0)
    head = BHCCM(16, MM5B.num_classes, fusion=fusion).eval()  # eval: dropout off, so both see the same x
    with torch.no_grad():  # non-unit scalars, so that a swapped α/β would show
        for p in head.parameters():
            if p.ndim == 0:
                p.uniform_(0.5, 1.5)
    x = torch.randn(3, 16, 9, 7, requires_grad=True)
    params = [x, *head.parameters()]
    new, ref = head(x), ref_bhccm(head, x)
    weights = [torch.randn_like(z) for z in ref]
    g_new = torch.autograd.grad(sum((z * w).sum() for z, w in zip(new, weights)), params)
    g_ref = torch.autograd.grad(sum((z * w).sum() for z, w in zip(ref, weights)), params)
    for a, b in zip(new, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip([("x", x), *head.named_parameters()], g_new, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_bhccm_level_logits_match_one_conv_per_level():
    torch.manual_seed(1)
    head = BHCCM(8, (2, 5, 7, 11)).eval()
    x = torch.randn(2, 8, 5, 6)
    for z, conv in zip(head.level_logits(x), head.heads, strict=True):
        torch.testing.assert_close(z, conv(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_classes", [MM5B.num_classes, (3, 5), (2, 3, 6, 8)])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("dtype,atol,rtol", [(torch.float64, 1e-10, 1e-10), (torch.float32, 2e-5, 1e-4)])
def test_bhccm_matches_frozen_previous_code(fusion, num_classes, dtype, atol, rtol):
    """Grouped Merging Blocks (one evaluation per stage and source level) == one MergingBlock call per block,
    outputs and gradients of x and of every parameter; also ``fuse`` on given (gated) level logits."""
    torch.manual_seed(0)
    head = BHCCM(16, num_classes, fusion=fusion).to(dtype).eval()
    with torch.no_grad():
        for p in head.parameters():
            if p.ndim == 0:
                p.uniform_(0.5, 1.5)
    x = torch.randn(3, 16, 9, 7, dtype=dtype, requires_grad=True)
    gate = torch.rand(3, 1, 9, 7, dtype=dtype)
    params = [x, *head.parameters()]
    names = ["x"] + [n for n, _ in head.named_parameters()]
    for new_fn, old_fn in (
        (lambda: head(x), lambda: frozen_fuse(head, frozen_level_logits(head, x))),
        (lambda: head.fuse([z * gate for z in head.level_logits(x)]),
         lambda: frozen_fuse(head, [z * gate for z in frozen_level_logits(head, x)])),
    ):
        new, old = new_fn(), old_fn()
        weights = [torch.randn_like(z) for z in old]
        g_new = torch.autograd.grad(sum((z * w).sum() for z, w in zip(new, weights)), params, allow_unused=True)
        g_old = torch.autograd.grad(sum((z * w).sum() for z, w in zip(old, weights)), params, allow_unused=True)
        for a, b in zip(new, old, strict=True):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        for name, a, b in zip(names, g_new, g_old, strict=True):
            if b is None:
                assert a is None or not a.any(), name
                continue
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_bhccm_train_mode_matches_frozen_previous_code():
    """With dropout active (same random stream for both) the outputs still agree."""
    torch.manual_seed(0)
    head = BHCCM(16, MM5B.num_classes, dropout=0.3).double().train()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    torch.manual_seed(5)
    new = head(x)
    torch.manual_seed(5)
    old = frozen_fuse(head, frozen_level_logits(head, x))
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_bhccm_state_dict_keys_unchanged():
    """Checkpoints (model.state_dict()) of the previous code load: the module tree is the same."""
    head = BHCCM(8, MM5B.num_classes)
    keys = set(head.state_dict())
    expected = {f"heads.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    for stage, pairs in (("c2f", ("0_1", "0_2", "1_2")), ("f2c", ("1_0", "2_0", "2_1"))):
        for key in pairs:
            expected |= {f"{stage}_blocks.{key}.{m}.weight" for m in ("align", "fc1", "fc2", "spatial")}
            expected |= {f"{stage}_blocks.{key}.align.bias", f"{stage}_alpha.{key}"}
    expected |= {"c2f_beta.1", "c2f_beta.2", "f2c_beta.0", "f2c_beta.1", "f2c_beta.2", "f2c_alpha_fine"}
    assert keys == expected
    BHCCM(8, MM5B.num_classes).load_state_dict(head.state_dict())


def test_bhccm_merging_block_hooks_still_fire():
    """Forward hooks on a Merging Block (used by hierars.project.teaching) see its call; outputs unchanged."""
    torch.manual_seed(0)
    head = BHCCM(8, MM5B.num_classes).eval()
    x = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        plain = head(x)
        seen = {}
        handle = head.f2c_blocks["2_0"].register_forward_hook(lambda _m, i, o: seen.setdefault("out", o))
        hooked = head(x)
        handle.remove()
    assert seen["out"].shape == (2, 4, 6, 5)
    for a, b in zip(hooked, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bhccm_flop_count_is_the_spec_multiply_adds():
    """Table VIII's FLOPs (``torch.utils.flop_counter``) count the Merging Blocks one by one, as the spec writes
    them, not the block-diagonal stage calls with their zero blocks: the counter's module tracking sets global
    hooks, which take the per-block path. Equal to the count with a hook forcing that path, and to the analytic
    count of the 1×1, MLP and 7×7 convolutions (2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    head = BHCCM(8, MM5B.num_classes).eval()
    x = torch.randn(1, 8, 6, 5)

    def count() -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            head(x)
        return fc.get_total_flops()

    plain = count()
    handle = head.f2c_blocks["2_0"].register_forward_hook(lambda *_: None)
    hooked = count()
    handle.remove()
    assert plain == hooked
    nc, px = MM5B.num_classes, 6 * 5
    blocks = [(nc[k], nc[j]) for j in range(1, 3) for k in range(j)] + [(nc[k], nc[j]) for j in range(2) for k in
                                                                       range(j + 1, 3)]
    macs = 8 * sum(nc) * px  # level heads
    macs += sum(cin * cout * px + 2 * (cin * 4 + 4 * cout) + 2 * 49 * px for cin, cout in blocks)
    assert plain == 2 * macs


@pytest.mark.parametrize("chunk", [7, 25, 150, 10_000])
@pytest.mark.parametrize("mu,weights", [(1.0, None), (0.5, [0.4, 0.7, 1.3]), (0.0, None)])
def test_hsc_loss_in_pixel_chunks_matches_previous_code(monkeypatch, chunk, mu, weights):
    """The loss is evaluated in pieces of ``HSC_CHUNK_PIXELS`` pixels: bands of rows (7: 1 row of 10 px,
    25: 2 rows), several images per piece (150 > 12·10 px) or everything at once; value and gradients
    must not depend on it (float64 to 1e-12), also for a second backward through the retained graph."""
    monkeypatch.setattr(losses_mod, "HSC_CHUNK_PIXELS", chunk)
    logits, labels = make_batch(dtype=torch.float64, b=4, low=(6, 5), seed=chunk)
    new = hsc_loss(logits, labels, MM5B, mu=mu, level_weights=weights)
    ref = ref_hsc(logits, labels, MM5B, mu=mu, weights=weights)
    g_ref = torch.autograd.grad(ref, logits)
    g_new = torch.autograd.grad(new, logits, retain_graph=True)
    assert_same(new, ref, g_new, g_ref, 1e-12)
    assert_same(new, ref, torch.autograd.grad(new, logits), g_ref, 1e-12)
    if mu:
        kl = path_kl(logits, labels, MM5B)
        g = torch.autograd.grad(kl, logits)
        kl_ref = _ref_path_nll([F.log_softmax(F.interpolate(z, size=labels.shape[-2:], mode="bilinear"), 1)
                                for z in logits], labels, MM5B, IGN)
        assert_same(kl, kl_ref, g, torch.autograd.grad(kl_ref, logits), 1e-12)


def test_pixel_chunks_cover_every_pixel_once():
    for shape, target in (((3, 5, 7, 9), 10), ((4, 2, 6, 6), 100), ((2, 1, 5, 5), 25), ((1, 1, 1, 1), 4096)):
        seen = torch.zeros(shape, dtype=torch.long)
        for piece in losses_mod._chunk(seen, losses_mod._pixel_chunks(torch.Size(shape), target)):
            assert piece.shape[0] * piece.shape[2] * piece.shape[3] <= max(target, shape[3])
            piece += 1
        assert torch.equal(seen, torch.ones_like(seen)), (shape, target)

# ----------------------------------------------------------------------------- upsampling of the level logits
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape,scale", [((16, 16), 4.0), ((7, 5), 4.0), ((9, 12), 2.0), ((40, 36), 4.0)])
def test_resize_bilinear_equals_interpolate_values_and_gradients(align_corners, shape, scale):
    """Small inputs go through the interpolation matrices, large ones (40×36 > MATMUL_MAX_SIDE) through
    F.interpolate: both must equal F.interpolate(scale_factor=...) and its backward."""
    z = torch.randn(2, 5, *shape, dtype=torch.float64, requires_grad=True)
    size = (int(shape[0] * scale), int(shape[1] * scale))
    new = resize_bilinear(z, size, align_corners, scale)
    ref = F.interpolate(z, scale_factor=scale, mode="bilinear", align_corners=align_corners)
    g = torch.randn_like(ref)
    torch.testing.assert_close(new, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(new, z, g)[0], torch.autograd.grad(ref, z, g)[0], rtol=0, atol=1e-12)
    odd = (size[0] + 3, size[1] - 1)  # a size that is no multiple of the input
    torch.testing.assert_close(resize_bilinear(z, odd, align_corners),
                               F.interpolate(z, size=odd, mode="bilinear", align_corners=align_corners),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("head", ["flat", "bhccm"])
def test_model_outputs_equal_smp_upsampling_module(head):
    """build_model's head output (resize_bilinear) equals smp's own nn.Upsample applied to every level."""
    torch.manual_seed(0)
    model = build_model("fpn", "tu-convnext_atto", 4, MM5B, head=head, decoder_channels=32).eval()
    x = torch.randn(2, 4, 64, 64)
    up = model.segmentation_head.upsampling
    assert isinstance(up, torch.nn.Upsample) and up.mode == "bilinear"
    with torch.no_grad():
        feats = model.decoder(model.encoder(x))
        levels = model.segmentation_head.head(feats)
        for a, b in zip(model.segmentation_head(feats), [up(z) for z in levels], strict=True):
            assert a.shape == b.shape == (2, a.shape[1], 64, 64)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert apply_upsampling(torch.nn.Identity(), levels[0]) is levels[0]
