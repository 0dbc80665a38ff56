"""Segmentation heads that turn a decoder feature map into per-level logits.

Every head maps a decoder feature ``x`` (B×C×h×w) to a **list** of logit tensors ordered coarse→fine,
each B×N_l×h×w. Heads expose ``num_classes`` (the tuple they were built for) and ``num_levels_out``
(how many tensors their forward returns):

- :class:`FlatHead` — the flat baseline (one 1×1 conv to the finest level). ``num_levels_out == 1``:
  it returns ``[finest_logits]`` only. Coarser levels are obtained at inference by lifting the hard
  finest prediction through the tree (``hierars.inference.lift_flat``: ŷ^l = parent_l[ŷ^L]), which is
  the paper's flat baseline; ``hierars.losses.HierarchicalCELoss`` trains it with CE on the finest level.
- :class:`IndependentHeads` — one 1×1 conv per level, no interaction (the author's dev-branch baseline).
- :class:`BHCCM` — level heads + :class:`MergingBlock` fusion (method-spec §1, Eqs. (1)–(6)).
- :class:`HSSNHead` — the HSSN peer baseline: one conv producing leaf + parent channels, split by level.

All heads apply one shared ``nn.Dropout2d`` to ``x`` before their 1×1 convolutions (mmseg ``conv_seg``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS = ("bidirectional", "coarse_to_fine", "fine_to_coarse", "none")


def _check_num_classes(num_classes: Sequence[int], min_levels: int = 1) -> tuple[int, ...]:
    nc = tuple(int(n) for n in num_classes)
    if len(nc) < min_levels or any(n < 1 for n in nc):
        raise ValueError(
            f"num_classes must be a sequence of >= {min_levels} positive ints (coarse→fine), got {num_classes!r}"
        )
    return nc


def _check_input(x: torch.Tensor, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected a decoder feature B×{in_channels}×h×w, got shape {tuple(x.shape)}")


class _Head(nn.Module):
    """Shared set-up of every head: decoder channels C, classes per level, outputs, one ``Dropout2d``."""

    def __init__(self, in_channels: int, num_classes: Sequence[int], dropout: float, min_levels: int = 1) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.num_classes = _check_num_classes(num_classes, min_levels)
        self.num_levels_out = len(self.num_classes)
        self.dropout = nn.Dropout2d(dropout)


class FlatHead(_Head):
    """Flat baseline: ``Conv1×1(C→N_L)`` on the finest level only.

    Args:
        in_channels: decoder channels C.
        num_classes: classes per level, coarse→fine (only the last entry is used by the conv).
        dropout: ``Dropout2d`` probability before the conv.

    Forward: x B×C×h×w → ``[logits]`` with logits B×N_L×h×w (a 1-element list; ``num_levels_out == 1``).
    """

    def __init__(self, in_channels: int, num_classes: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__(in_channels, num_classes, dropout)
        self.num_levels_out = 1
        self.conv = nn.Conv2d(self.in_channels, self.num_classes[-1], kernel_size=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_input(x, self.in_channels)
        return [self.conv(self.dropout(x))]


class IndependentHeads(_Head):
    """One ``Conv1×1(C→N_l)`` per level on a shared (dropped-out) feature; no interaction between levels.

    Forward: x B×C×h×w → list of L tensors B×N_l×h×w, coarse→fine.
    """

    def __init__(self, in_channels: int, num_classes: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__(in_channels, num_classes, dropout)
        self.convs = nn.ModuleList(nn.Conv2d(self.in_channels, n, kernel_size=1) for n in self.num_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_input(x, self.in_channels)
        x = self.dropout(x)
        return [conv(x) for conv in self.convs]


class MergingBlock(nn.Module):
    """Merging Block MB(x; Cin→Cout) of BHCCM (method-spec §1).

    ``P = Conv1×1(x)`` (channel alignment, with bias);
    ``Ac = σ(W2 ReLU(W1 AvgPool(x)) + W2 ReLU(W1 MaxPool(x)))`` (channel attention, W1: Cin→hidden,
    W2: hidden→Cout, 1×1, no bias, B×Cout×1×1);
    ``As = σ(Conv7×7([mean_c x, max_c x]))`` (spatial attention, 2→1, pad 3, no bias, B×1×h×w);
    ``MB(x) = P ⊙ Ac ⊙ As``. Parameters: Cin·Cout + Cout + hidden·(Cin+Cout) + 98.

    Forward: x B×Cin×h×w → B×Cout×h×w.
    """

    def __init__(self, cin: int, cout: int, hidden: int = 4) -> None:
        super().__init__()
        if cin < 1 or cout < 1 or hidden < 1:
            raise ValueError(f"MergingBlock needs positive cin/cout/hidden, got {cin}, {cout}, {hidden}")
        self.cin, self.cout = int(cin), int(cout)
        self.align = nn.Conv2d(cin, cout, kernel_size=1, bias=True)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(cin, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, cout, kernel_size=1, bias=False)
        self.spatial = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.cin)
        proj = self.align(x)
        mlp = lambda t: self.fc2(torch.relu(self.fc1(t)))  # noqa: E731 - shared MLP on both poolings
        channel_att = torch.sigmoid(mlp(self.avg_pool(x)) + mlp(self.max_pool(x)))
        spatial_in = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        # channels-last input: PyTorch then runs this 2→1 7×7 conv through oneDNN instead of the im2col
        # fallback (_slow_conv2d), about half the forward + backward time at 16×16 (same result to rounding)
        spatial_att = torch.sigmoid(self.spatial(spatial_in.contiguous(memory_format=torch.channels_last)))
        return proj * channel_att * spatial_att


def _scalar() -> nn.Parameter:
    return nn.Parameter(torch.ones(()))


class BHCCM(_Head):
    """Bidirectional Hierarchical Category Consistency Module (method-spec §1), for L >= 2 levels.

    Level heads ``F_l = Conv1×1_{C→N_l}(dropout(x))``, then (levels 1-indexed, coarse l=1 → fine l=L;
    every α, β is a scalar ``nn.Parameter`` initialised to 1):

    coarse-to-fine (c2f), each level receives Merging Blocks from all coarser **head outputs** F_k::

        F_1' = F_1
        F_l' = β_l · F_l + Σ_{k<l} α_{k→l} · MB_{k→l}(F_k)                 (l = 2..L)

    fine-to-coarse (f2c), each level receives Merging Blocks from all finer **c2f outputs** F_k'::

        Y_L = α_L · F_L' + β'_L · F_L
        Y_l = β'_l · F_l + Σ_{k>l} α_{k→l} · MB_{k→l}(F_k')                (l = 1..L-1)

    For L = 3 this is exactly Eqs. (1)–(6): F2' = α12 MB12(F1) + β2 F2; F3' = α13 MB13(F1) + α23 MB23(F2)
    + β3 F3; Y3 = α3 F3' + β3' F3; Y2 = α32 MB32(F3') + β2' F2; Y1 = α21 MB21(F2') + α31 MB31(F3') + β1' F1.
    It uses L(L-1) Merging Blocks and L² + L scalars (6 and 12 for L = 3), i.e. 13C + 1,711 parameters
    more than :class:`FlatHead` for (4, 9, 18) classes (Table VIII).

    Fusion variants (Table VII ablation; only the modules a variant uses are created):

    - ``"bidirectional"``: the equations above, returns (Y_1, …, Y_L);
    - ``"coarse_to_fine"``: returns (F_1', …, F_L');
    - ``"fine_to_coarse"``: the f2c equations with F_k' replaced by F_k (spec: "set F_l' = F_l in (4)–(6)");
    - ``"none"``: returns (F_1, …, F_L) (equivalent to :class:`IndependentHeads`).

    Forward: x B×C×h×w → list of L tensors B×N_l×h×w, coarse→fine.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: Sequence[int],
        fusion: str = "bidirectional",
        dropout: float = 0.1,
        mb_hidden: int = 4,
    ) -> None:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        super().__init__(in_channels, num_classes, dropout, min_levels=2)
        nc, L = self.num_classes, self.num_levels_out
        self.fusion = fusion
        self.heads = nn.ModuleList(nn.Conv2d(self.in_channels, n, kernel_size=1) for n in nc)

        self.use_c2f = fusion in ("bidirectional", "coarse_to_fine")
        self.use_f2c = fusion in ("bidirectional", "fine_to_coarse")
        # Module/parameter names use 0-based level indices: "k_j" is the block from level k to level j.
        if self.use_c2f:
            self.c2f_blocks = nn.ModuleDict(
                {f"{k}_{j}": MergingBlock(nc[k], nc[j], mb_hidden) for j in range(1, L) for k in range(j)}
            )
            self.c2f_alpha = nn.ParameterDict({key: _scalar() for key in self.c2f_blocks})
            self.c2f_beta = nn.ParameterDict({str(j): _scalar() for j in range(1, L)})
        if self.use_f2c:
            self.f2c_blocks = nn.ModuleDict(
                {
                    f"{k}_{j}": MergingBlock(nc[k], nc[j], mb_hidden)
                    for j in range(L - 1)
                    for k in range(j + 1, L)
                }
            )
            self.f2c_alpha = nn.ParameterDict({key: _scalar() for key in self.f2c_blocks})
            self.f2c_alpha_fine = _scalar()  # α_L in Y_L = α_L F_L' + β'_L F_L
            self.f2c_beta = nn.ParameterDict({str(j): _scalar() for j in range(L)})

    def level_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Level heads only: x B×C×h×w → [F_1, …, F_L], F_l B×N_l×h×w (dropout applied to x)."""
        _check_input(x, self.in_channels)
        x = self.dropout(x)
        # the L level convs read the same x: one conv with their stacked weights (C→Σ N_l), then split
        # (views; the gradients reach each level's own weight and bias through the cat)
        weight, bias = self._head_weights()
        return list(torch.split(F.conv2d(x, weight, bias), list(self.num_classes), dim=1))

    def _head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The level heads' weights and biases stacked: ΣN×C×1×1 and ΣN."""
        return torch.cat([head.weight for head in self.heads]), torch.cat([head.bias for head in self.heads])

    def _stage_weights(self, groups: list[tuple[torch.Tensor, list[MergingBlock], list[torch.Tensor], list[int]]],
                       ) -> tuple[torch.Tensor, ...]:
        """The weights of one fusion stage's Merging Blocks, as :func:`_merge_stage` applies them (see there)."""
        return _stage_weights(groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fuse(self.level_logits(x))

    def fuse(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The fusion of Eqs. (1)–(6) on given level logits [F_1, …, F_L] (B×N_l×h×w each).

        Exposed so that CDSA (method-spec §4, Eq. 15) can gate the head outputs before fusing them.

        The Merging Blocks of a stage that read the same tensor (c2f: MB_{k→l} for all l > k read F_k;
        f2c: MB_{k→l} for all l < k read F_k') are evaluated together by :func:`_merge_stage`; so are all blocks
        of a stage, whose inputs are known before it starts (c2f: the head outputs F_k; f2c: the c2f outputs
        F_k'), so each stage is one call.
        """
        if len(feats) != self.num_levels_out or any(f.shape[1] != n for f, n in zip(feats, self.num_classes)):
            raise ValueError(
                f"fuse expects {self.num_levels_out} tensors with channels {self.num_classes}, "
                f"got {[tuple(f.shape) for f in feats]}"
            )
        L = self.num_levels_out
        if self.use_c2f:
            # acc[j] = β_j F_j + Σ_{k<j} α_{k→j} MB_{k→j}(F_k), the contributions added source by source
            acc: list[torch.Tensor | None] = [None] + [self.c2f_beta[str(j)] * feats[j] for j in range(1, L)]
            groups = []
            for k in range(L - 1):
                keys = [f"{k}_{j}" for j in range(k + 1, L)]
                groups.append((feats[k], [self.c2f_blocks[key] for key in keys],
                               [self.c2f_alpha[key] for key in keys], list(range(k + 1, L))))
            acc = _merge_stage(groups, acc, self._stage_weights)
            refined = [feats[0], *acc[1:]]  # F_1' = F_1
        else:
            refined = feats  # fine_to_coarse only: F_l' = F_l
        if not self.use_f2c:
            return refined
        acc = [self.f2c_beta[str(j)] * feats[j] for j in range(L - 1)] + [None]
        groups = []
        for k in range(L - 1, 0, -1):
            keys = [f"{k}_{j}" for j in range(k)]
            groups.append((refined[k], [self.f2c_blocks[key] for key in keys],
                           [self.f2c_alpha[key] for key in keys], list(range(k))))
        acc = _merge_stage(groups, acc, self._stage_weights)
        acc[-1] = self.f2c_alpha_fine * refined[-1] + self.f2c_beta[str(L - 1)] * feats[-1]
        return acc


def _has_forward_hooks(blocks: list[MergingBlock]) -> bool:
    """Whether calling the blocks one by one would run forward (pre-)hooks (theirs or global ones)."""
    from torch.nn.modules import module as _module

    return bool(_module._global_forward_hooks or _module._global_forward_pre_hooks
                or any(mb._forward_hooks or mb._forward_pre_hooks for mb in blocks))


def _merge_stage(
    groups: list[tuple[torch.Tensor, list[MergingBlock], list[torch.Tensor], list[int]]],
    acc: list[torch.Tensor | None],
    stage_weights: Callable[[list], tuple[torch.Tensor, ...]],
) -> list[torch.Tensor | None]:
    """``acc[t] += α · MB(x)`` for every Merging Block of one fusion stage, evaluated together.

    ``groups``: one ``(x, blocks, alphas, targets)`` per source tensor x (B×Cin_s×h×w; the sources of a
    stage may differ in channels): the blocks ``MB_i`` that read x, their scalars α_i and target levels.
    ``acc``: per-level tensors B×N_l×h×w (or ``None``); returns the updated list. ``stage_weights``: makes the
    stage's weights from ``groups`` (:meth:`BHCCM._stage_weights`, i.e. :func:`_stage_weights`, which
    ``benchmarks/bench_head_bound.py`` replaces by ready-made tensors to time the fusion without that work).

    Same maths as calling each :class:`MergingBlock` (the result equals it to float rounding), with fewer,
    larger operations, since on CPU at decoder resolution (16×16 for 64-px tiles) the time goes to the
    number of operations rather than their size: the sources are concatenated along channels and every
    block's weights placed in one block-diagonal matrix per layer, so that the 1×1 aligns, each MLP layer
    and the 7×7 spatial convs run as one conv / matmul for the whole stage (the off-diagonal zeros add
    multiply-adds by exact zeros: about a thousand per pixel for the mm5b tree, nothing next to the decoder;
    ``torch.utils.flop_counter`` tracks modules with global hooks, so it counts the blocks one by one, i.e. the
    spec's multiply-adds); the poolings over
    space are shared by the blocks of a stage, those over channels by the blocks of a source; the scalar α_i
    multiplies the small channel attention B×Cout_i instead of the B×Cout_i×h×w product. If a block has
    forward hooks (or global ones are set) the blocks are called one by one instead, so that the hooks see
    each call.
    """
    blocks = [mb for _, group, _, _ in groups for mb in group]
    for x, group, _, _ in groups:
        _check_input(x, group[0].cin)
    if _has_forward_hooks(blocks):  # hooks (e.g. hierars.project.teaching) see every block's call
        acc = list(acc)
        for x, group, alphas, targets in groups:
            for mb, alpha, t in zip(group, alphas, targets):
                term = alpha * mb(x)
                acc[t] = term if acc[t] is None else acc[t] + term
        return acc
    sources = [x for x, _, _, _ in groups]
    batch = sources[0].shape[0]
    couts = [mb.cout for mb in blocks]
    x = sources[0] if len(sources) == 1 else torch.cat(sources, dim=1)  # B×ΣCin_s×h×w
    align_w, align_b, fc1_w, fc2_w, alpha, spatial_w = stage_weights(groups)
    proj = F.conv2d(x, align_w, align_b)  # P for all blocks: B×ΣCout×h×w
    # channel attention: the shared MLP on [avg; max] pooled x (2B×ΣCin), per block; max pooling keeps the
    # index-based backward of nn.AdaptiveMaxPool2d (gradient to one position)
    pooled = torch.cat([x.mean(dim=(2, 3)), x.flatten(2).max(dim=2).values])
    hid = torch.relu(F.linear(pooled, fc1_w))  # 2B×(n·hidden)
    mlp = F.linear(hid, fc2_w)  # 2B×ΣCout
    channel_att = (torch.sigmoid(mlp[:batch] + mlp[batch:]) * alpha)[:, :, None, None]  # α_i Ac_i
    # spatial attention for all blocks: B×n×h×w, from [mean_c x_s, max_c x_s] of each source (2 channels
    # each). Channels-last input: PyTorch then runs the 7×7 conv through oneDNN instead of the im2col
    # fallback (_slow_conv2d), about half the time at 16×16
    spatial_in = torch.cat([t for xs in sources
                            for t in (xs.mean(dim=1, keepdim=True), xs.amax(dim=1, keepdim=True))], dim=1)
    spatial_att = torch.sigmoid(F.conv2d(spatial_in.contiguous(memory_format=torch.channels_last), spatial_w,
                                         padding=3))
    gated = (proj * channel_att).split(couts, dim=1)
    targets = [t for _, _, _, ts in groups for t in ts]
    acc = list(acc)
    for t, part, att in zip(targets, gated, spatial_att.split(1, dim=1)):
        acc[t] = part * att if acc[t] is None else torch.addcmul(acc[t], part, att)
    return acc


def _stage_weights(
    groups: list[tuple[torch.Tensor, list[MergingBlock], list[torch.Tensor], list[int]]],
) -> tuple[torch.Tensor, ...]:
    """One fusion stage's weights as :func:`_merge_stage` applies them, each layer's in one block-diagonal matrix
    (rows: the blocks' outputs in order; columns: the concatenated sources' channels, one block per source):
    align ΣCout×ΣCin×1×1 and its bias ΣCout, fc1 (n·hidden)×ΣCin, fc2 ΣCout×(n·hidden), α_i repeated over block
    i's channels ΣCout, spatial n×2S×7×7 (S sources). Made from the parameters at each call (autograd
    operations: cats, block-diagonals, expands)."""
    blocks = [mb for _, group, _, _ in groups for mb in group]

    def diag(get) -> torch.Tensor:
        per_source = [torch.cat([get(mb) for mb in group]) for _, group, _, _ in groups]
        return per_source[0] if len(per_source) == 1 else torch.block_diag(*per_source)

    fc2 = [mb.fc2.weight.flatten(1) for mb in blocks]  # Cout_i×hidden each, on block i's hidden units
    return (diag(lambda mb: mb.align.weight.flatten(1))[:, :, None, None],
            torch.cat([mb.align.bias for mb in blocks]),
            diag(lambda mb: mb.fc1.weight.flatten(1)),
            fc2[0] if len(fc2) == 1 else torch.block_diag(*fc2),
            torch.cat([a.expand(mb.cout) for _, group, alphas, _ in groups for a, mb in zip(alphas, group)]),
            diag(lambda mb: mb.spatial.weight.flatten(1)).view(len(blocks), 2 * len(groups), 7, 7))


class HSSNHead(_Head):
    """HSSN-style peer baseline: one ``Conv1×1(C → Σ_l N_l)`` giving all leaf and parent channels jointly.

    HSSN orders channels leaf-first; here the single conv's channels are ordered coarse→fine and split
    by level, which is the same model up to a permutation. Train with ``hierars.losses.HSSNLoss``
    (sigmoid tree-min loss + per-level CE) and predict with ``predict_levels(..., mode="hssn")`` (HSSN's
    joint-softmax rule) or ``mode="jsps"``.

    Forward: x B×C×h×w → list of L tensors B×N_l×h×w, coarse→fine.
    """

    def __init__(self, in_channels: int, num_classes: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__(in_channels, num_classes, dropout)
        self.conv = nn.Conv2d(self.in_channels, sum(self.num_classes), kernel_size=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        _check_input(x, self.in_channels)
        return list(torch.split(self.conv(self.dropout(x)), list(self.num_classes), dim=1))


HEADS: dict[str, type[nn.Module]] = {
    "flat": FlatHead,
    "independent": IndependentHeads,
    "bhccm": BHCCM,
    "hssn": HSSNHead,
}


def build_head(
    name: str,
    in_channels: int,
    num_classes: Sequence[int],
    fusion: str = "bidirectional",
    dropout: float = 0.1,
) -> nn.Module:
    """Create a head by name (``"flat" | "independent" | "bhccm" | "hssn"``); ``fusion`` is used by BHCCM only."""
    if name not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {name!r}")
    if name == "bhccm":
        return BHCCM(in_channels, num_classes, fusion=fusion, dropout=dropout)
    return HEADS[name](in_channels, num_classes, dropout=dropout)
