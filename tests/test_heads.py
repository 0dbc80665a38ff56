"""Heads: output shapes, Table VIII parameter overhead, exact Eqs. (1)-(6), fusion ablations, L-level BHCCM."""

from __future__ import annotations

import pytest
import torch

from hierars.decoding import lift_flat, predict_levels
from hierars.heads import BHCCM, FUSIONS, FlatHead, HSSNHead, IndependentHeads, MergingBlock, build_head
from hierars.hierarchy import Hierarchy

MM5B = Hierarchy.builtin("mm5b")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels", [256, 512, 1024])
def test_table_viii_parameter_overhead(channels):
    """BHCCM adds exactly 13C + 1,711 parameters over the flat head for (4, 9, 18) classes (spec §1)."""
    assert MM5B.num_classes == (4, 9, 18)
    extra = n_params(BHCCM(channels, MM5B.num_classes)) - n_params(FlatHead(channels, MM5B.num_classes))
    assert extra == 13 * channels + 1711
    assert {256: 5039, 512: 8367, 1024: 15023}[channels] == extra


def test_table_viii_flop_overhead():
    """Conv/matmul MACs added by BHCCM at 80×80, C = 256: (13C + 540 + 588)·hw + 992 (MLPs on pooled vectors).

    Adding the 62·hw average-pool operations of the spec's count gives Table VIII's 0.0289 G.
    """
    from torch.utils.flop_counter import FlopCounterMode

    c, hw = 256, 80
    flops = []
    for head in (BHCCM(c, MM5B.num_classes).eval(), FlatHead(c, MM5B.num_classes).eval()):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            head(torch.randn(1, c, hw, hw))
        flops.append(counter.get_total_flops())
    macs = (flops[0] - flops[1]) // 2
    assert macs == (13 * c + 540 + 588) * hw * hw + 992
    assert round((macs + 62 * hw * hw) / 1e9, 4) == 0.0289


def test_merging_block_parameters_and_shape():
    cin, cout = 9, 18
    mb = MergingBlock(cin, cout)
    assert n_params(mb) == cin * cout + cout + 4 * (cin + cout) + 98
    assert mb(torch.randn(2, cin, 5, 7)).shape == (2, cout, 5, 7)


def _mb_reference(mb: MergingBlock, x: torch.Tensor) -> torch.Tensor:
    """MB(x) = P ⊙ Ac ⊙ As written out with functional ops from the spec."""
    w1, w2 = mb.fc1.weight, mb.fc2.weight

    def mlp(v):
        return torch.einsum(
            "oh,bh->bo", w2[:, :, 0, 0], torch.relu(torch.einsum("hi,bi->bh", w1[:, :, 0, 0], v))
        )

    ac = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    sp = torch.nn.functional.conv2d(
        torch.cat([x.mean(1, True), x.amax(1, True)], 1), mb.spatial.weight, padding=3
    )
    p = torch.nn.functional.conv2d(x, mb.align.weight, mb.align.bias)
    return p * ac * torch.sigmoid(sp)


def test_merging_block_matches_spec_formula():
    torch.manual_seed(0)
    mb = MergingBlock(4, 9)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(mb(x), _mb_reference(mb, x))


def _randomise_scalars(head: BHCCM) -> None:
    with torch.no_grad():
        for p in head.parameters():
            if p.ndim == 0:
                p.copy_(torch.rand(()) + 0.5)


def test_bhccm_reproduces_equations_1_to_6():
    """Eqs. (1)-(6) written out by hand for 3 levels, with non-trivial α/β values."""
    torch.manual_seed(0)
    head = BHCCM(16, MM5B.num_classes, dropout=0.0).eval()
    _randomise_scalars(head)
    x = torch.randn(2, 16, 8, 8)
    F1, F2, F3 = (h(x) for h in head.heads)
    c, f = head.c2f_blocks, head.f2c_blocks
    ca, cb, fa, fb = head.c2f_alpha, head.c2f_beta, head.f2c_alpha, head.f2c_beta
    F2p = ca["0_1"] * c["0_1"](F1) + cb["1"] * F2  # (2)
    F3p = ca["0_2"] * c["0_2"](F1) + ca["1_2"] * c["1_2"](F2) + cb["2"] * F3  # (3)
    Y3 = head.f2c_alpha_fine * F3p + fb["2"] * F3  # (4)
    Y2 = fa["2_1"] * f["2_1"](F3p) + fb["1"] * F2  # (5)
    Y1 = fa["1_0"] * f["1_0"](F2p) + fa["2_0"] * f["2_0"](F3p) + fb["0"] * F1  # (6)
    out = head(x)
    for got, want in zip(out, (Y1, Y2, Y3), strict=True):
        torch.testing.assert_close(got, want)
    # fuse() on gated head outputs (CDSA, Eq. 15) uses the gated tensors everywhere
    gate = torch.rand(2, 1, 8, 8)
    F1g = F1 * gate
    F2pg = ca["0_1"] * c["0_1"](F1g) + cb["1"] * F2
    F3pg = ca["0_2"] * c["0_2"](F1g) + ca["1_2"] * c["1_2"](F2) + cb["2"] * F3
    Y1g = fa["1_0"] * f["1_0"](F2pg) + fa["2_0"] * f["2_0"](F3pg) + fb["0"] * F1g
    torch.testing.assert_close(head.fuse([F1g, F2, F3])[0], Y1g)
    with pytest.raises(ValueError, match="fuse expects"):
        head.fuse([F1, F2])
    assert len(list(head.parameters())) - 3 * 2 - 6 * 5 == 12  # 12 scalars
    assert all(p.item() == 1.0 for p in BHCCM(16, MM5B.num_classes).parameters() if p.ndim == 0)


def test_bhccm_fusion_variants():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    heads = {fusion: BHCCM(16, MM5B.num_classes, fusion=fusion, dropout=0.0).eval() for fusion in FUSIONS}
    for fusion in FUSIONS[1:]:
        heads[fusion].heads.load_state_dict(heads["bidirectional"].heads.state_dict())
    bi = heads["bidirectional"]
    feats = [h(x) for h in bi.heads]
    # none: the level heads' outputs
    for got, want in zip(heads["none"](x), feats, strict=True):
        torch.testing.assert_close(got, want)
    # c2f only: (F1, F2', F3') with the same blocks
    c2f = heads["coarse_to_fine"]
    c2f.c2f_blocks.load_state_dict(bi.c2f_blocks.state_dict())
    F2p = c2f.c2f_blocks["0_1"](feats[0]) + feats[1]
    F3p = c2f.c2f_blocks["0_2"](feats[0]) + c2f.c2f_blocks["1_2"](feats[1]) + feats[2]
    for got, want in zip(c2f(x), (feats[0], F2p, F3p), strict=True):
        torch.testing.assert_close(got, want)
    # f2c only: Eqs. (4)-(6) with F' = F
    f2c = heads["fine_to_coarse"]
    fb = f2c.f2c_blocks
    want = (
        fb["1_0"](feats[1]) + fb["2_0"](feats[2]) + feats[0],
        fb["2_1"](feats[2]) + feats[1],
        2 * feats[2],
    )
    for got, w in zip(f2c(x), want, strict=True):
        torch.testing.assert_close(got, w)
    # parameter counts: only the modules each variant uses
    n = {k: n_params(v) for k, v in heads.items()}
    assert n["none"] == n_params(IndependentHeads(16, MM5B.num_classes))
    assert n["bidirectional"] - n["none"] == 1686 + 12
    assert n["coarse_to_fine"] - n["none"] == 195 + 276 + 386 + 5
    assert n["fine_to_coarse"] - n["none"] == 377 + 190 + 262 + 7


@pytest.mark.parametrize("num_classes", [(3, 5), (2, 3, 6, 8)])
def test_bhccm_any_number_of_levels(num_classes):
    L = len(num_classes)
    head = BHCCM(8, num_classes)
    out = head(torch.randn(2, 8, 4, 4))
    assert [o.shape[1] for o in out] == list(num_classes)
    assert len(head.c2f_blocks) + len(head.f2c_blocks) == L * (L - 1)
    assert sum(1 for p in head.parameters() if p.ndim == 0) == L * L + L
    sum(o.sum() for o in out).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_heads_output_conventions():
    x = torch.randn(2, 32, 6, 6)
    for name in ("flat", "independent", "bhccm", "hssn"):
        head = build_head(name, 32, MM5B.num_classes)
        out = head(x)
        assert isinstance(out, list) and len(out) == head.num_levels_out
        assert [o.shape for o in out] == [torch.Size((2, n, 6, 6)) for n in MM5B.num_classes[-len(out) :]]
    assert FlatHead(32, MM5B.num_classes).num_levels_out == 1
    assert n_params(HSSNHead(32, MM5B.num_classes)) == n_params(IndependentHeads(32, MM5B.num_classes))


def test_flat_head_with_lifting_equals_lifted_finest_argmax():
    torch.manual_seed(0)
    head = FlatHead(32, MM5B.num_classes).eval()
    out = head(torch.randn(2, 32, 6, 6))
    fine = out[0].argmax(1)
    want = torch.stack([MM5B.parents[2][fine], fine], 1)
    want = torch.cat([MM5B.parents[1][want[:, :1]], want], 1)
    for mode in ("argmax", "jsps", "hssn"):
        torch.testing.assert_close(predict_levels(out, MM5B, mode=mode), want)
    torch.testing.assert_close(lift_flat(out, MM5B), want)
    torch.testing.assert_close(lift_flat(fine, MM5B), want)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fusion"):
        BHCCM(8, (4, 9), fusion="both")
    with pytest.raises(ValueError, match="num_classes"):
        BHCCM(8, (4,))
    with pytest.raises(ValueError, match="head must be"):
        build_head("nope", 8, (4, 9))
    with pytest.raises(ValueError, match="B×8×h×w"):
        IndependentHeads(8, (4, 9))(torch.randn(2, 7, 4, 4))
