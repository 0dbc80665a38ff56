"""CDKS: Branch Interaction Units (BIUs) between the frozen Branch 2 and the trainable Branch 1 encoders.

Each BIU (method-spec §4, Eqs. 7-8, paper Fig. 7) takes the output F1 of a Branch-1 encoder block and the
output F2 of the same block of Branch 2, both B×HW×d as tokens::

    (7)  F̂1 = F1 + γ1 ⊙ DA(LN(F1), LN(Linear_{d→d}(F2)))     queries from Branch 1, values from Branch 2
    (8)  F̃1 = F̂1 + γ2 ⊙ FFN(LN(F̂1))                          ConvFFN: Linear d→d/4, DWConv3×3, GELU, Linear
    merge: F1_next = w1 · F̃1 + w2 · F2                        input of Branch 1's next block

LayerNorms use eps 1e-6; γ1, γ2 are per-channel vectors initialised to 0 (ambiguity 7, PIIP ``ca_gamma`` /
``cffn_gamma``); w1, w2 are learnable scalars.

**Merge initialisation (ambiguity 6): w1 = w2 = 0.5** (PIIP uses 1, 1). Branch 1 starts from Branch 2's
weights and γ = 0, so at initialisation F̃1 = F1 = F2 at every interaction point; with (0.5, 0.5) the merge
is the identity and Branch 1's encoder reproduces Branch 2's features exactly (bit for bit: 0.5·a + 0.5·a = a
in floating point, for the same input and both branches in eval mode). PIIP's (1, 1) would feed 2·F2 to the
next block from the first step on, changing the pretrained feature distribution that γ = 0 is meant to
preserve (paper §IV-C1), and compounding over the 12 units of ConvNeXt-B. ``merge_init=(1.0, 1.0)``
reproduces PIIP.

Where the units go (:func:`interaction_points`; any timm encoder reached through smp's ``tu-`` encoders):

- stages with a ``blocks`` sequence (ConvNeXt, Swin, MaxViT, MambaOut, ...): after every k blocks
  of the stage and after its last block (blocks that output flattened tokens, as PVT-v2's, make that
  stage stage-wise under ``"auto"``). ``every="auto"``: k = 3 for ConvNeXt (ConvNeXt-B, depths
  3/3/27/3 → 1+1+9+1 = 12 units, the paper's 12), k = 1 (every block) for the others (ViT-like);
- stages without a reachable block list (ResNet ``layer1..4``, RegNet, EfficientNet/MobileNet stage
  groups): stage-wise, one unit on each feature stage's output (stride >= 4);
- ``every="stage"`` forces stage-wise units everywhere, an int k sets the block interval.

Mechanics: Branch 2 is run first (under ``no_grad``); forward hooks on its interaction modules, registered
for that pass only, record their outputs. Branch 1 then runs with (permanent) forward hooks on the same
modules that replace each output by the BIU's merged output. Branch 2 receives nothing back (the flow is one-way, as in the paper), so the two encoders
need no lock-step rewrite of timm's stage code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hierars.transfer.deform_attn import DeformableCrossAttention
from hierars.transfer.errors import TransferError

__all__ = ["ConvFFN", "BranchInteractionUnit", "InteractionPoint", "interaction_points", "count_units", "CDKS"]

_CONVNEXT_EVERY = 3
log = logging.getLogger(__name__)


class ConvFFN(nn.Module):
    """PIIP's ConvFFN on tokens: Linear d→h, depth-wise Conv3×3 on the H×W map, GELU, Linear h→d.

    Forward: x B×HW×d, spatial_shape (H, W) → B×HW×d.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, spatial_shape: tuple[int, int]) -> torch.Tensor:
        B, N, _ = x.shape
        H, W = spatial_shape
        h = self.fc1(x)
        h = self.dwconv(h.transpose(1, 2).reshape(B, -1, H, W)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(h))


class BranchInteractionUnit(nn.Module):
    """One BIU: Eqs. 7-8 and the branch merge (see the module docstring).

    Args:
        dim: channels d of the interaction point.
        n_heads: deformable-attention heads (``None``: adapted to d, see ``choose_heads``).
        n_points: sampling points per head (4).
        deform_ratio: value width of the attention = d · ratio (0.5).
        ffn_ratio: ConvFFN hidden width = d · ratio (0.25).
        merge_init: initial (w1, w2).

    Forward: f1, f2 with the same shape, either B×d×H×W (``channels_last=False``) or B×H×W×d → the merged
    Branch-1 feature, same shape and layout.
    """

    def __init__(self, dim: int, n_heads: int | None = None, n_points: int = 4, deform_ratio: float = 0.5,
                 ffn_ratio: float = 0.25, merge_init: tuple[float, float] = (0.5, 0.5)) -> None:
        super().__init__()
        self.dim = int(dim)
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_proj = nn.Linear(dim, dim)  # "a linear projection layer projects the features from Branch 2"
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DeformableCrossAttention(dim, n_heads=n_heads, n_points=n_points, ratio=deform_ratio)
        self.gamma1 = nn.Parameter(torch.zeros(dim))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, max(1, int(dim * ffn_ratio)))
        self.gamma2 = nn.Parameter(torch.zeros(dim))
        self.w1 = nn.Parameter(torch.tensor(float(merge_init[0])))
        self.w2 = nn.Parameter(torch.tensor(float(merge_init[1])))

    def interact(self, t1: torch.Tensor, t2: torch.Tensor, spatial_shape: tuple[int, int]) -> torch.Tensor:
        """Eqs. 7-8 on tokens: t1, t2 B×HW×d → F̃1 B×HW×d."""
        value = self.feat_norm(self.feat_proj(t2))
        t1 = t1 + self.gamma1 * self.attn(self.query_norm(t1), value, spatial_shape)  # (7)
        return t1 + self.gamma2 * self.ffn(self.ffn_norm(t1), spatial_shape)  # (8)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        if f1.shape != f2.shape or f1.ndim != 4:
            raise ValueError(f"BIU expects two equal 4-D feature maps, got {tuple(f1.shape)} and {tuple(f2.shape)}")
        if channels_last:
            B, H, W, d = f1.shape
            t1, t2 = f1.reshape(B, H * W, d), f2.reshape(B, H * W, d)
        else:
            B, d, H, W = f1.shape
            t1, t2 = f1.flatten(2).transpose(1, 2), f2.flatten(2).transpose(1, 2)
        if d != self.dim:
            raise ValueError(f"BIU built for {self.dim} channels got {d}")
        out = self.interact(t1, t2, (H, W))
        out = out.reshape(B, H, W, d) if channels_last else out.transpose(1, 2).reshape(B, d, H, W)
        return self.w1 * out + self.w2 * f2  # branch merge: w1·F̃1 + w2·F2


@dataclass(frozen=True)
class InteractionPoint:
    """A module of the timm feature model after which a BIU sits: its qualified name and granularity."""

    name: str  # qualified name inside the timm feature model (``encoder.model``)
    kind: str  # "block" or "stage"


def _feature_model(encoder: nn.Module) -> nn.Module:
    """The timm ``features_only`` model of an smp ``tu-`` encoder (or a timm feature model itself)."""
    model = getattr(encoder, "model", None)
    if isinstance(model, nn.Module) and hasattr(model, "feature_info"):
        return model
    if hasattr(encoder, "feature_info"):
        return encoder
    raise TransferError(
        f"CDKS cannot reach the blocks of encoder {type(encoder).__name__}: it needs a timm encoder "
        "(build_model(..., encoder='tu-<timm name>')), whose features_only model lists its stages"
    )


def _resolve(model: nn.Module, name: str) -> tuple[str, nn.Module] | None:
    for cand in (name, name.replace(".", "_")):
        try:
            return cand, model.get_submodule(cand)
        except AttributeError:
            continue
    return None


def interaction_points(encoder: nn.Module, every: int | str = "auto") -> list[InteractionPoint]:
    """Where CDKS puts its BIUs in an encoder (see the module docstring for the rule).

    Args:
        encoder: an smp ``TimmUniversalEncoder`` (``model.encoder`` of a ``tu-`` model) or a timm
            ``features_only`` model.
        every: ``"auto"`` (3 blocks for ConvNeXt, every block for other block-list stages, stage-wise
            otherwise), ``"stage"``, or an int k (after every k blocks; stage-wise where a stage has no
            block list).

    Returns:
        the interaction points in forward order.

    Raises:
        TransferError: the encoder is not a timm feature model, or none of its stages can be reached
            (e.g. timm's ``FeatureGetterNet`` wrapping a plain ViT).
    """
    if not (every in ("auto", "stage") or (isinstance(every, int) and every >= 1)):
        raise ValueError(f"every must be 'auto', 'stage' or a positive int, got {every!r}")
    model = _feature_model(encoder)
    info = model.feature_info
    if not hasattr(info, "module_name"):
        raise TransferError(
            f"CDKS cannot reach the blocks of {type(model).__name__}: its features come from "
            "forward_intermediates (e.g. a plain ViT), not from stage modules that hooks can follow"
        )
    names, reductions = info.module_name(), info.reduction()
    points: list[InteractionPoint] = []
    for name, reduction in zip(names, reductions):
        if reduction < 4:  # stride-2 stem outputs (ResNet act1, EfficientNet bn1) are not stages
            continue
        found = _resolve(model, name)
        if found is None:
            raise TransferError(
                f"CDKS cannot reach stage {name!r} of {type(model).__name__} (encoder {type(encoder).__name__}); "
                "its features come from a wrapper whose blocks are not modules of the feature model"
            )
        qual, stage = found
        blocks = getattr(stage, "blocks", None)
        if every != "stage" and isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
            k = every if isinstance(every, int) else (
                _CONVNEXT_EVERY if "convnext" in type(stage).__name__.lower() else 1)
            n = len(blocks)
            points += [InteractionPoint(f"{qual}.blocks.{i}", "block") for i in range(n)
                       if (i + 1) % k == 0 or i == n - 1]
        else:
            points.append(InteractionPoint(qual, "stage"))
    if not points:
        raise TransferError(f"CDKS found no stage of {type(model).__name__} to interact at "
                            f"(feature modules: {names})")
    return points


class _Tape:
    """Per-forward store of Branch-2 features, shared by the recording and the injecting hooks."""

    def __init__(self) -> None:
        self.features: dict[int, torch.Tensor] = {}
        self.recording = False
        self.injecting = False


class _RecordHook:
    def __init__(self, tape: _Tape, index: int) -> None:
        self.tape, self.index = tape, index

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.tape.recording:
            self.tape.features[self.index] = output


class _InjectHook:
    def __init__(self, tape: _Tape, unit: BranchInteractionUnit, index: int, channels_last: bool) -> None:
        self.tape, self.unit, self.index, self.channels_last = tape, unit, index, channels_last

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not self.tape.injecting:
            return None  # Branch 1 used on its own: no interaction
        f2 = self.tape.features.get(self.index)
        if f2 is None:
            raise RuntimeError(f"CDKS: no Branch-2 feature recorded for interaction point {self.index}")
        return self.unit(output, f2, channels_last=self.channels_last)


def _is_channels_last(model: nn.Module) -> bool:
    fmt = getattr(model, "output_fmt", None)
    return str(getattr(fmt, "value", fmt) or "NCHW").upper() == "NHWC"


class CDKS(nn.Module):
    """The BIUs of one Branch-1 / Branch-2 encoder pair, wired with forward hooks.

    Args:
        encoder1: Branch-1 encoder (trainable; its interaction modules' outputs are replaced).
        encoder2: Branch-2 encoder (frozen; its interaction modules' outputs are recorded).
        in_channels: input bands, for the shape probe.
        every: unit placement, see :func:`interaction_points`.
        probe_size: side of the dummy input used once to read each point's channels (encoders with a fixed
            input size, e.g. Swin, need theirs).
        **unit_kwargs: :class:`BranchInteractionUnit` options (``n_heads``, ``n_points``, ``merge_init``...).

    Use (Branch 2 first)::

        with cdks.record():
            f2 = encoder2(x)    # under no_grad
        with cdks.inject():
            f1 = encoder1(x)
        cdks.clear()
    """

    def __init__(self, encoder1: nn.Module, encoder2: nn.Module, in_channels: int, every: int | str = "auto",
                 probe_size: int = 64, **unit_kwargs) -> None:
        super().__init__()
        self.points = interaction_points(encoder2, every)
        m1, m2 = _feature_model(encoder1), _feature_model(encoder2)
        self.channels_last = _is_channels_last(m2)
        self._tape = _Tape()
        self._source = [m2]  # a plain list: Branch 2 is not a submodule of CDKS (nor saved with it)
        with self.record():
            dims = self._probe(encoder2, in_channels, probe_size)
        token_stages = {p.name.rsplit(".blocks.", 1)[0] for p, d in zip(self.points, dims)
                        if d is None and p.kind == "block"}
        if every == "auto" and token_stages:
            # blocks that work on flattened tokens (PVT-v2 passes H, W beside them): interact stage-wise there
            log.info("CDKS: blocks of %s output tokens; their stages get stage-wise units", sorted(token_stages))
            points: list[InteractionPoint] = []
            for p in self.points:
                stage = p.name.rsplit(".blocks.", 1)[0]
                if p.kind == "block" and stage in token_stages:
                    if not points or points[-1].name != stage:
                        points.append(InteractionPoint(stage, "stage"))
                else:
                    points.append(p)
            self.points = points
            with self.record():
                dims = self._probe(encoder2, in_channels, probe_size)
        for p, d in zip(self.points, dims):
            if d is None:
                raise TransferError(
                    f"CDKS: interaction point {p.name!r} does not output a B×C×H×W (or B×H×W×C) map; its "
                    "blocks work on flattened tokens - use every='stage' (or 'auto')"
                )
        self.units = nn.ModuleList(BranchInteractionUnit(d, **unit_kwargs) for d in dims)
        for i, p in enumerate(self.points):
            m1.get_submodule(p.name).register_forward_hook(
                _InjectHook(self._tape, self.units[i], i, self.channels_last))

    def _probe(self, encoder: nn.Module, in_channels: int, size: int) -> list[int | None]:
        """Channels of each interaction point's output (None where it is not a 4-D map)."""
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                param = next(encoder.parameters())
                encoder(torch.zeros(1, in_channels, size, size, dtype=param.dtype, device=param.device))
        finally:
            encoder.train(was_training)
        dims: list[int | None] = []
        for i in range(len(self.points)):
            out = self._tape.features.get(i)
            ok = isinstance(out, torch.Tensor) and out.ndim == 4
            dims.append(int(out.shape[-1] if self.channels_last else out.shape[1]) if ok else None)
        self._tape.features.clear()
        return dims

    def record(self) -> _Recording:
        """Context for the Branch-2 encoder pass: hooks, registered for its duration only (the source model
        carries no hooks outside it), store the interaction points' outputs."""
        return _Recording(self._tape, self._source[0], [p.name for p in self.points])

    def inject(self) -> _Session:
        """Context for the Branch-1 encoder pass: hooks replace outputs with BIU outputs."""
        return _Session(self._tape, "injecting")

    def clear(self) -> None:
        self._tape.features.clear()

    @property
    def num_units(self) -> int:
        return len(self.units)

    def extra_repr(self) -> str:
        return f"units={len(self.points)}, points={[p.name for p in self.points]}"


class _Recording:
    def __init__(self, tape: _Tape, model: nn.Module, names: list[str]) -> None:
        self.tape, self.model, self.names = tape, model, names
        self.handles: list = []

    def __enter__(self) -> _Tape:
        self.handles = [self.model.get_submodule(n).register_forward_hook(_RecordHook(self.tape, i))
                        for i, n in enumerate(self.names)]
        self.tape.recording = True
        return self.tape

    def __exit__(self, *exc: object) -> None:
        self.tape.recording = False
        for h in self.handles:
            h.remove()
        self.handles = []


class _Session:
    def __init__(self, tape: _Tape, flag: str) -> None:
        self.tape, self.flag = tape, flag

    def __enter__(self) -> _Tape:
        setattr(self.tape, self.flag, True)
        return self.tape

    def __exit__(self, *exc: object) -> None:
        setattr(self.tape, self.flag, False)


def count_units(encoder: nn.Module, every: int | str = "auto") -> int:
    """Number of BIUs :func:`interaction_points` places in ``encoder``."""
    return len(interaction_points(encoder, every))
