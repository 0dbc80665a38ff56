"""``build_model``: any segmentation_models_pytorch architecture × any timm encoder, with a hierarchical head.

The smp model is created as a flat 1-class model (``smp.create_model(arch, encoder_name=...,
encoder_weights=None, in_channels=..., classes=1)``) and its ``segmentation_head`` is replaced by a
:class:`HierarchicalSegmentationHead` wrapping one of :mod:`hierars.heads`. smp's own ``forward``
(encoder → decoder → ``segmentation_head``) is unchanged, so the model returns the head's list of L
logit tensors coarse→fine (1 tensor for ``head="flat"``) — BHCCM is literally plug-and-play on the flat model.

Resolution: smp's segmentation heads upsample their output (×4 for UPerNet, FPN, DeepLabV3+ and
Segformer, with ``align_corners=True``) so that the flat model's output matches the input size. By default
(``upsample_logits=True``) that exact upsampling module is kept and applied to every level's logits, so
outputs are B×N_l×H×W like the flat smp model. With ``upsample_logits=False`` the logits stay at decoder
resolution (B×N_l×H/4×W/4): cheaper, and the losses / :func:`hierars.inference.predict_levels` upsample
bilinearly to the label size themselves (mmseg style).

Nothing is downloaded: encoders are always built with random weights; ``pretrained`` may point to a
local state dict (see :func:`build_model`).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.base.initialization import initialize_head
from timm.models import adapt_input_conv
from torch import nn

from hierars.heads import HEADS, build_head
from hierars.levels import apply_upsampling

if TYPE_CHECKING:
    from hierars.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

_PREFIXES = ("", "module.", "encoder.model.", "encoder.", "model.", "backbone.")


class HierarchicalSegmentationHead(nn.Module):
    """Drop-in replacement for smp's ``segmentation_head``: a hierarchical head + smp's upsampling.

    Args:
        head: a module from :mod:`hierars.heads` (B×C×h×w → list of tensors).
        upsampling: the upsampling module of the replaced smp head (``nn.Identity()`` for none).

    Forward: decoder output B×C×h×w → list of ``head.num_levels_out`` tensors B×N_l×(s·h)×(s·w).
    """

    def __init__(self, head: nn.Module, upsampling: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.upsampling = upsampling if upsampling is not None else nn.Identity()

    @property
    def num_levels_out(self) -> int:
        return self.head.num_levels_out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [apply_upsampling(self.upsampling, z) for z in self.head(x)]


def decoder_out_channels(segmentation_head: nn.Module) -> int:
    """Decoder output channels C = ``in_channels`` of the first ``nn.Conv2d`` of an smp segmentation head."""
    for module in segmentation_head.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    raise ValueError(f"cannot find a Conv2d in the segmentation head {type(segmentation_head).__name__}")


def _find_upsampling(segmentation_head: nn.Module) -> nn.Module:
    for module in segmentation_head.modules():
        if isinstance(module, nn.Upsample):
            return module
    return nn.Identity()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    # timm's reader handles .safetensors, nested {"state_dict"/"model": ...} and "module." prefixes
    sd = timm.models.load_state_dict(str(path))
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a (possibly nested) state dict of tensors")
    return sd


def _match_keys(sd: dict[str, torch.Tensor], target: nn.Module) -> tuple[dict[str, torch.Tensor], int]:
    """Strip the prefix that makes most keys of ``sd`` match ``target``'s state dict. Returns (sd, matches)."""
    target_keys = set(target.state_dict())
    best, best_n = {}, 0
    for prefix in _PREFIXES:
        cand = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        n = len(target_keys & set(cand))
        if n > best_n:
            best, best_n = cand, n
    return best, best_n


def _load_into(target: nn.Module, sd: dict[str, torch.Tensor], in_channels: int, source: Path) -> None:
    """Load matching tensors of ``sd`` into ``target``; adapt input convs whose band count differs."""
    own = target.state_dict()
    adapted, skipped = [], []
    for key, value in list(sd.items()):
        if key not in own:
            continue
        want = own[key].shape
        if value.shape == want:
            continue
        if (
            value.ndim == 4
            and value.shape[0] == want[0]
            and value.shape[2:] == want[2:]
            and want[1] == in_channels
        ):
            sd[key] = adapt_input_conv(in_channels, value.float(), base_chans=value.shape[1]).to(value.dtype)
            adapted.append(key)
        else:
            skipped.append(key)
            del sd[key]
    result = target.load_state_dict(sd, strict=False)
    loaded = len(set(sd) & set(own))
    logger.info(
        "loaded %d/%d encoder tensors from %s (adapted input conv: %s; shape mismatch skipped: %s; missing: %d)",
        loaded,
        len(own),
        source,
        adapted,
        skipped,
        len(result.missing_keys),
    )
    if result.missing_keys and loaded < len(own) // 2:
        raise ValueError(
            f"{source}: only {loaded} of {len(own)} encoder tensors match; missing e.g. {result.missing_keys[:5]}"
        )


def build_model(
    arch: str,
    encoder: str,
    in_channels: int,
    hierarchy: Hierarchy,
    head: str = "bhccm",
    fusion: str = "bidirectional",
    decoder_channels: int | None = None,
    pretrained: str | Path | None = None,
    dropout: float = 0.1,
    upsample_logits: bool = True,
    **smp_kwargs: Any,
) -> nn.Module:
    """Build an smp segmentation model whose ``segmentation_head`` is a hierarchical head.

    Args:
        arch: any smp architecture name (``smp.create_model``), e.g. ``"upernet"``, ``"deeplabv3plus"``,
            ``"fpn"``, ``"segformer"``, ``"unet"``.
        encoder: any smp encoder, in particular timm ones as ``"tu-<timm name>"`` (``"tu-convnext_atto"``).
        in_channels: number of input bands (3, 4, 7, 10, ...).
        hierarchy: the label tree; its ``num_classes`` sizes the head.
        head: ``"bhccm" | "flat" | "independent" | "hssn"`` (see :mod:`hierars.heads`).
        fusion: BHCCM fusion (``"bidirectional" | "coarse_to_fine" | "fine_to_coarse" | "none"``).
        decoder_channels: decoder width C; passed to smp as ``decoder_segmentation_channels`` (FPN,
            Segformer) or ``decoder_channels`` (UPerNet, DeepLabV3+, ...). ``None`` keeps smp's default.
        pretrained: optional local encoder weights (``.pth``/``.pt``/``.safetensors``; a bare or nested
            state dict). Either a timm classification checkpoint of the same timm model (loaded through
            timm's own pretrained loader, which adapts the first conv to ``in_channels`` and drops the
            classifier) or a state dict of the smp encoder itself (keys optionally prefixed ``encoder.``;
            input convs adapted with ``timm.models.adapt_input_conv``). Never downloads.
        dropout: head dropout.
        upsample_logits: keep smp's final upsampling (outputs at input size); see the module docstring.
        **smp_kwargs: forwarded to ``smp.create_model`` (e.g. ``encoder_depth``, ``decoder_*``).

    Returns:
        the smp model; ``model(x)`` with x B×in_channels×H×W returns a list of tensors B×N_l×H×W coarse→fine
        (one tensor, the finest level, for ``head="flat"``). Extra attributes: ``hierarchy``, ``head_name``,
        ``num_levels_out``, ``decoder_out_channels``.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ValueError(
            f"unknown smp architecture {arch!r}; choose from {sorted(smp.MODEL_ARCHITECTURES_MAPPING)}"
        )
    kwargs = dict(smp_kwargs)
    if decoder_channels is not None:
        params = inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[arch.lower()].__init__).parameters
        key = (
            "decoder_segmentation_channels"
            if "decoder_segmentation_channels" in params
            else "decoder_channels"
        )
        kwargs[key] = decoder_channels
    for forbidden in ("encoder_weights", "classes", "encoder_name"):
        if forbidden in kwargs:
            raise ValueError(f"{forbidden!r} is set by build_model; do not pass it")

    def create(**extra: Any) -> nn.Module:
        return smp.create_model(
            arch,
            encoder_name=encoder,
            in_channels=in_channels,
            classes=1,
            **{"encoder_weights": None, **extra},
            **kwargs,
        )

    model = create()
    if pretrained is not None:
        path = Path(pretrained)
        if not path.is_absolute() and not path.exists():
            from hierars.config import resolve_path

            path = resolve_path(path)
        sd = _read_state_dict(path)
        is_timm = encoder.startswith("tu-")
        target = model.encoder.model if is_timm else model.encoder
        matched, n = _match_keys(sd, target)
        if n >= len(target.state_dict()) // 2:
            _load_into(target, matched, in_channels, path)
        elif is_timm:
            # A timm classification checkpoint: let timm's loader (first-conv adaptation, classifier
            # removal, model-specific key filters) load it while building the encoder. The overlay
            # removes every remote source, so this can never download.
            overlay = {"state_dict": sd, "file": None, "url": None, "hf_hub_id": None, "source": ""}
            model = create(encoder_weights=True, pretrained_cfg_overlay=overlay)
        else:
            raise ValueError(f"{path}: its keys do not match encoder {encoder!r} (only {n} tensors match)")

    channels = decoder_out_channels(model.segmentation_head)
    upsampling = _find_upsampling(model.segmentation_head) if upsample_logits else nn.Identity()
    hier_head = build_head(head, channels, hierarchy.num_classes, fusion=fusion, dropout=dropout)
    # smp initialises its segmentation head with xavier-uniform weights and zero biases; the replacement
    # head gets the same, so the flat head is smp's own head. PyTorch's default conv init here (smaller
    # weights, random biases) cost several mIoU points on GID-15 at a 280-iteration budget (issue 4 note).
    initialize_head(hier_head)
    model.segmentation_head = HierarchicalSegmentationHead(hier_head, upsampling)
    model.hierarchy = hierarchy
    model.head_name = head
    model.num_levels_out = hier_head.num_levels_out
    model.decoder_out_channels = channels
    return model
