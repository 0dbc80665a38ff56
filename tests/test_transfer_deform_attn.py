"""Deformable cross-attention (CDKS's DA): grid-sample kernel vs a hand-written per-point loop."""

from __future__ import annotations

import math

import pytest
import torch

from hierars.transfer.deform_attn import (
    DeformableCrossAttention,
    choose_heads,
    deform_attn_core,
    reference_points,
)


def _bilinear(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """v: D×H×W; (x, y) normalised in [0, 1]; zero outside; pixel centres at (j+0.5)/W (align_corners=False)."""
    D, H, W = v.shape
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(float(px.detach())), math.floor(float(py.detach()))
    out = torch.zeros(D, dtype=v.dtype)
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= yi < H and 0 <= xi < W:
                wx = 1 - (px - xi).abs()
                wy = 1 - (py - yi).abs()
                out = out + wx * wy * v[:, yi, xi]
    return out


def _naive(value, shape, loc, attn):
    B, N, M, Dh = value.shape
    H, W = shape
    Q, P = loc.shape[1], loc.shape[3]
    rows = []
    for b in range(B):
        qs = []
        for q in range(Q):
            heads = []
            for m in range(M):
                vm = value[b, :, m].T.reshape(Dh, H, W)
                acc = torch.zeros(Dh, dtype=value.dtype)
                for p in range(P):
                    acc = acc + attn[b, q, m, p] * _bilinear(vm, loc[b, q, m, p, 0], loc[b, q, m, p, 1])
                heads.append(acc)
            qs.append(torch.cat(heads))
        rows.append(torch.stack(qs))
    return torch.stack(rows)


def test_core_matches_naive_loop_forward_and_gradient():
    g = torch.Generator().manual_seed(0)
    B, H, W, M, Dh, Q, P = 2, 3, 4, 2, 3, 5, 3
    value = torch.randn(B, H * W, M, Dh, generator=g, dtype=torch.float64, requires_grad=True)
    # locations partly outside [0, 1] so the zero padding is exercised; none exactly on a pixel centre
    loc = (torch.rand(B, Q, M, P, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2).requires_grad_(True)
    attn = torch.rand(B, Q, M, P, generator=g, dtype=torch.float64).softmax(-1).requires_grad_(True)
    fast = deform_attn_core(value, (H, W), loc, attn)
    slow = _naive(value, (H, W), loc, attn)
    assert fast.shape == (B, Q, M * Dh)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    g_fast = torch.autograd.grad((fast * w).sum(), (value, loc, attn))
    g_slow = torch.autograd.grad((slow * w).sum(), (value, loc, attn))
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_reference_points_are_pixel_centres():
    ref = reference_points(2, 4)
    assert ref.shape == (8, 2)
    torch.testing.assert_close(ref[0], torch.tensor([0.125, 0.25]))
    torch.testing.assert_close(ref[-1], torch.tensor([0.875, 0.75]))


def test_initialisation_follows_deformable_detr():
    da = DeformableCrossAttention(40, n_points=4)
    assert da.value_dim == 20 and da.n_heads == 2
    assert torch.count_nonzero(da.sampling_offsets.weight) == 0
    assert torch.count_nonzero(da.attention_weights.weight) == 0
    assert torch.count_nonzero(da.attention_weights.bias) == 0
    bias = da.sampling_offsets.bias.view(da.n_heads, da.n_points, 2)
    # head m points along angle 2πm/M (normalised to the unit square border), point p at distance p+1
    torch.testing.assert_close(bias[0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]]))
    torch.testing.assert_close(bias[1], torch.tensor([[-1.0, 0.0], [-2.0, 0.0], [-3.0, 0.0], [-4.0, 0.0]]),
                               atol=1e-6, rtol=0)
    assert torch.count_nonzero(da.value_proj.bias) == 0 and torch.count_nonzero(da.output_proj.bias) == 0


@pytest.mark.parametrize(("value_dim", "heads"), [(20, 2), (40, 5), (80, 10), (160, 16), (512, 16), (384, 16), (4, 1)])
def test_heads_adapt_to_width(value_dim, heads):
    assert choose_heads(value_dim) == heads
    assert value_dim % heads == 0


def test_module_runs_and_backpropagates():
    torch.manual_seed(0)
    da = DeformableCrossAttention(16, n_heads=2)
    q = torch.randn(2, 12, 16, requires_grad=True)
    v = torch.randn(2, 12, 16, requires_grad=True)
    out = da(q, v, (3, 4))
    assert out.shape == (2, 12, 16)
    out.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
