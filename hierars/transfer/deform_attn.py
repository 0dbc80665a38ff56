"""Single-level multi-scale deformable cross-attention in pure PyTorch (method-spec §4, the ``DA`` of Eq. 7).

This is Deformable DETR's ``MSDeformAttn`` (Zhu et al., 2021) restricted to what CDKS uses: one feature
level (both branches see the same image, so ``spatial_shapes = [(H, W)]``), 4 sampling points per head,
Branch-1 tokens as queries and Branch-2 tokens as values, and a value width ``d · ratio`` (PIIP's
``deform_ratio = 0.5``). The sampling kernel is the grid-sample formulation of Deformable DETR's
``ms_deform_attn_core_pytorch`` (bilinear, zero padding, ``align_corners=False``, grid = 2·loc − 1); no
compiled extension is needed. Written from the published description and OpenGVLab/PIIP
(``classification/ops/modules/ms_deform_attn.py``), not copied.

Shapes: B batch, Q queries, N = H·W values, M heads, P points, D_h = value width per head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["deform_attn_core", "reference_points", "choose_heads", "DeformableCrossAttention"]


def deform_attn_core(
    value: torch.Tensor, spatial_shape: tuple[int, int], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted bilinear samples of ``value`` at ``locations`` (one level).

    Args:
        value: B×N×M×D_h, N = H·W tokens in row-major order.
        spatial_shape: (H, W) of the value map.
        locations: B×Q×M×P×2 sampling points (x, y) normalised to [0, 1] (pixel centres at (j+0.5)/W,
            (i+0.5)/H); points outside read zeros.
        weights: B×Q×M×P attention weights (already softmax-normalised by the caller).

    Returns:
        B×Q×(M·D_h): ``Σ_p weights[b,q,m,p] · bilinear(value[b,:,m], locations[b,q,m,p])`` per head, heads
        concatenated.
    """
    B, N, M, Dh = value.shape
    H, W = spatial_shape
    if N != H * W:
        raise ValueError(f"value has {N} tokens but spatial_shape is {H}×{W}")
    Q, P = locations.shape[1], locations.shape[3]
    v = value.permute(0, 2, 3, 1).reshape(B * M, Dh, H, W)
    grid = (2 * locations - 1).permute(0, 2, 1, 3, 4).reshape(B * M, Q, P, 2)
    sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # BM×Dh×Q×P
    w = weights.permute(0, 2, 1, 3).reshape(B * M, 1, Q, P)
    out = (sampled * w).sum(-1)  # BM×Dh×Q
    return out.view(B, M * Dh, Q).transpose(1, 2)


def reference_points(height: int, width: int, device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel-centre reference points of an H×W map, (x, y) in [0, 1], row-major: Q×2 with Q = H·W."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def choose_heads(value_dim: int, max_heads: int = 16, min_head_dim: int = 8) -> int:
    """Number of heads for a value width: the largest divisor of ``value_dim`` that is ``<= max_heads`` and
    leaves at least ``min_head_dim`` channels per head (1 if none does).

    PIIP uses 16 heads on wide encoders; small encoders (convnext_atto: d = 40/80/160/320, value width
    20/40/80/160) get 2/5/10/16 heads instead of a width that 16 does not divide.
    """
    if value_dim < 1 or max_heads < 1:
        raise ValueError(f"value_dim and max_heads must be positive, got {value_dim}, {max_heads}")
    best = 1
    for m in range(1, min(max_heads, value_dim) + 1):
        if value_dim % m == 0 and value_dim // m >= min_head_dim:
            best = m
    return best


class DeformableCrossAttention(nn.Module):
    """One-level deformable cross-attention: queries attend to ``n_points`` learned offsets around their
    reference point in the value map.

    Args:
        dim: token width d of queries and values (and of the output).
        n_heads: heads M; ``None`` picks :func:`choose_heads` of the value width.
        n_points: sampling points P per head (4 in PIIP / TransLU).
        ratio: value width = ``int(dim · ratio)`` (PIIP ``deform_ratio`` 0.5).

    Initialisation (Deformable DETR / PIIP): sampling-offset weights 0 and a radial bias (head m points
    along angle 2πm/M, point p at distance p+1 pixels), attention-weight projection 0 (uniform weights over
    the P points), xavier-uniform value and output projections with zero bias.

    Forward:
        query B×Q×d, value B×N×d, spatial_shape (H, W) of the value map, ref Q×2 or B×Q×2 reference points
        in [0, 1] (default: the pixel centres of an H×W query map) → B×Q×d.
    """

    def __init__(self, dim: int, n_heads: int | None = None, n_points: int = 4, ratio: float = 0.5) -> None:
        super().__init__()
        self.dim = int(dim)
        self.value_dim = max(1, int(self.dim * ratio))
        self.n_heads = choose_heads(self.value_dim) if n_heads is None else int(n_heads)
        if self.value_dim % self.n_heads:
            raise ValueError(f"value width {self.value_dim} (= {dim}·{ratio}) is not divisible by {self.n_heads} heads")
        self.n_points = int(n_points)
        self.sampling_offsets = nn.Linear(self.dim, self.n_heads * self.n_points * 2)
        self.attention_weights = nn.Linear(self.dim, self.n_heads * self.n_points)
        self.value_proj = nn.Linear(self.dim, self.value_dim)
        self.output_proj = nn.Linear(self.value_dim, self.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]  # on the unit square's border
        grid = grid.view(self.n_heads, 1, 2).repeat(1, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, value: torch.Tensor, spatial_shape: tuple[int, int],
                ref: torch.Tensor | None = None) -> torch.Tensor:
        B, Q, _ = query.shape
        H, W = spatial_shape
        if value.shape[:2] != (B, H * W) or value.shape[-1] != self.dim or query.shape[-1] != self.dim:
            raise ValueError(f"expected query B×Q×{self.dim} and value B×{H * W}×{self.dim}, "
                             f"got {tuple(query.shape)} and {tuple(value.shape)}")
        if ref is None:
            if Q != H * W:
                raise ValueError("reference points are needed when queries and values differ in size")
            ref = reference_points(H, W, query.device, query.dtype)
        ref = ref.expand(B, Q, 2) if ref.ndim == 2 else ref
        M, P = self.n_heads, self.n_points
        v = self.value_proj(value).view(B, H * W, M, self.value_dim // M)
        offsets = self.sampling_offsets(query).view(B, Q, M, P, 2)
        normalizer = torch.tensor([W, H], dtype=offsets.dtype, device=offsets.device)
        locations = ref[:, :, None, None, :] + offsets / normalizer  # offsets are in pixels
        weights = self.attention_weights(query).view(B, Q, M, P).softmax(-1)
        return self.output_proj(deform_attn_core(v, (H, W), locations, weights))
