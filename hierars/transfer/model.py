"""TransLU: the dual-branch transfer model (paper §IV-C, method-spec §4).

- **Branch 2** is the trained source model (any :func:`hierars.build_model` model with a multi-level head),
  frozen: ``requires_grad=False``, kept in eval mode even when the wrapper is in train mode (BatchNorm
  statistics never move), run under ``torch.no_grad()``. It receives nothing from Branch 1.
- **Branch 1** has the same architecture: a deep copy of the source model whose encoder keeps the source's
  weights (the paper's initialisation), whose decoder is re-initialised (smp's decoder init, fresh
  normalisation statistics) and whose head is a new BHCCM sized for the target tree (smp head init).
- **CDKS** (:mod:`hierars.transfer.interaction`): Branch Interaction Units between the two encoders.
- **CDSA** (:mod:`hierars.transfer.gating`): Branch-2 probabilities gate Branch 1's BHCCM level logits before
  the fusion (Eq. 15); :class:`~hierars.transfer.hybrid.TransLULoss` supervises with hybrid targets.

``TransLU(x)`` returns Branch 1's level logits (list of L tensors B×N_l×H×W, coarse→fine), like any model of
:func:`hierars.build_model`, so the existing losses, decoding (JSPS) and metrics apply unchanged. Each
forward also leaves the frozen branch's logits in ``model.source_logits`` (for the hybrid loss).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from torch import nn

from hierars.heads import BHCCM
from hierars.hierarchy import Hierarchy
from hierars.models import HierarchicalSegmentationHead, build_model
from hierars.transfer.errors import TransferError
from hierars.transfer.gating import CDSAGate
from hierars.transfer.interaction import CDKS
from hierars.transfer.mapping import CrossDomainMapping

__all__ = ["TransLU", "build_branch1", "finetune_model", "load_source_model", "describe_model"]


# ---------------------------------------------------------------------------------------------- helpers
def describe_model(model: nn.Module) -> dict[str, Any]:
    """Architecture facts of a :func:`hierars.build_model` model: arch, encoder, in_channels, head, classes."""
    arch = next((k for k, cls in smp.MODEL_ARCHITECTURES_MAPPING.items() if type(model) is cls), None)
    enc = getattr(model, "encoder", None)
    enc_name = getattr(enc, "name", None)
    encoder = f"tu-{enc_name}" if enc_name and hasattr(enc, "model") else (enc_name or type(enc).__name__)
    in_ch = getattr(enc, "_in_channels", None)
    if in_ch is None and enc is not None:
        conv = next((m for m in enc.modules() if isinstance(m, nn.Conv2d)), None)
        in_ch = None if conv is None else conv.in_channels
    seg = getattr(model, "segmentation_head", None)
    head = getattr(seg, "head", None)
    return {"arch": arch, "encoder": encoder, "in_channels": in_ch, "head": getattr(model, "head_name", None),
            "num_classes": tuple(getattr(head, "num_classes", ()) or ()),
            "num_levels_out": getattr(head, "num_levels_out", None)}


def _check_source(model: nn.Module, hierarchy: Hierarchy | None, arch: str | None, encoder: str | None
                  ) -> Hierarchy:
    info = describe_model(model)
    if info["arch"] is None or not isinstance(getattr(model, "segmentation_head", None), HierarchicalSegmentationHead):
        raise TransferError(f"the source model ({type(model).__name__}) is not a hierars.build_model model")
    tree = getattr(model, "hierarchy", None)
    if hierarchy is not None:
        if tree is not None and tree != hierarchy:
            raise TransferError(f"the source model was built for tree {tree.name!r} {tree.num_classes}, "
                                f"not the given source tree {hierarchy.name!r} {hierarchy.num_classes}")
        tree = hierarchy
    if tree is None:
        raise TransferError("the source model carries no tree (model.hierarchy); pass source_hierarchy")
    if info["num_classes"] != tuple(tree.num_classes) or info["num_levels_out"] != tree.num_levels:
        raise TransferError(f"the source model's head gives {info['num_levels_out']} level(s) {info['num_classes']}; "
                            f"TransLU needs every level of source tree {tree.name!r} {tree.num_classes} "
                            "(a multi-level head: bhccm, independent or hssn)")
    if arch is not None and arch.lower() != info["arch"]:
        raise TransferError(f"the source model is a {info['arch']!r} model, not {arch!r}")
    if encoder is not None and encoder != info["encoder"]:
        raise TransferError(f"the source model's encoder is {info['encoder']!r}, not {encoder!r}")
    return tree


def build_branch1(source_model: nn.Module, target_hierarchy: Hierarchy, fusion: str = "bidirectional",
                  dropout: float = 0.1) -> nn.Module:
    """A same-architecture model for the target tree: the source encoder's weights, a new decoder and head.

    The decoder is re-initialised as smp initialises a fresh model (``reset_parameters`` then smp's
    ``initialize_decoder``: kaiming convs, unit norms, fresh running statistics); the head is a new
    :class:`~hierars.heads.BHCCM` for ``target_hierarchy`` with smp's head init, behind the source's own
    logit upsampling. The source model is not modified.

    Returns: a model with the attributes of :func:`hierars.build_model` (``hierarchy``, ``head_name``...).
    """
    model = copy.deepcopy(source_model)
    for m in model.decoder.modules():
        if hasattr(m, "reset_parameters") and m is not model.decoder:
            m.reset_parameters()
    initialize_decoder(model.decoder)
    old = model.segmentation_head
    channels = int(getattr(model, "decoder_out_channels", old.head.in_channels))
    head = BHCCM(channels, target_hierarchy.num_classes, fusion=fusion, dropout=dropout)
    initialize_head(head)
    model.segmentation_head = HierarchicalSegmentationHead(head, copy.deepcopy(old.upsampling))
    model.hierarchy = target_hierarchy
    model.head_name = "bhccm"
    model.num_levels_out = head.num_levels_out
    model.decoder_out_channels = channels
    for p in model.parameters():
        p.requires_grad_(True)
    return model.train()


def finetune_model(source_model: nn.Module, target_hierarchy: Hierarchy, **kwargs: Any) -> nn.Module:
    """The single-branch fine-tuned baseline of Table X: Branch 1 alone (:func:`build_branch1`)."""
    _check_source(source_model, None, None, None)
    return build_branch1(source_model, target_hierarchy, **kwargs)


def load_source_model(path: str | Path, arch: str, encoder: str, in_channels: int, hierarchy: Hierarchy, *,
                      head: str = "bhccm", fusion: str = "bidirectional", decoder_channels: int | None = None,
                      **build_kwargs: Any) -> nn.Module:
    """Rebuild a trained source model and load its weights, refusing a checkpoint that does not match.

    Args:
        path: a training checkpoint (``{"model": state_dict, "config": {...}, "hierarchy": {...}}`` as the
            training loop writes) or a bare state dict.
        arch, encoder, in_channels, hierarchy, head, fusion, decoder_channels, **build_kwargs: what the
            source model is expected to be (:func:`hierars.build_model` arguments).

    Returns: the model in eval mode.

    Raises:
        TransferError (naming the file): the checkpoint's stored settings (arch, encoder, head, fusion,
            decoder width) or tree differ from the given ones, or its tensors do not fit the architecture
            (e.g. another band count).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TransferError(f"{path}: not a checkpoint or state dict")
    sd = state.get("model", state)
    cfg = state.get("config") or {}
    given = {"arch": arch, "encoder": encoder, "head": head, "fusion": fusion, "decoder_channels": decoder_channels}
    for key, want in given.items():
        if key in cfg and cfg[key] != want:
            raise TransferError(f"{path}: the source checkpoint was trained with {key}={cfg[key]!r}, not {want!r}")
    saved_tree = state.get("hierarchy")
    if isinstance(saved_tree, dict):
        nc = tuple(saved_tree.get("num_classes") or ())
        name = saved_tree.get("name")
        if (nc and nc != tuple(hierarchy.num_classes)) or (name and name != hierarchy.name):
            raise TransferError(f"{path}: the source checkpoint's tree is {name!r} {nc}, not the given "
                                f"{hierarchy.name!r} {tuple(hierarchy.num_classes)}")
    model = build_model(arch, encoder, in_channels, hierarchy, head=head, fusion=fusion,
                        decoder_channels=decoder_channels, **build_kwargs)
    own = model.state_dict()
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and v.shape != own[k].shape]
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if bad or missing or unexpected:
        hint = ""
        for k, got, want in bad:
            if len(got) == 4 and got[0] == want[0] and got[2:] == want[2:] and got[1] != want[1]:
                hint = f" (input layer {k!r} takes {got[1]} bands, not {want[1]})"
                break
        raise TransferError(
            f"{path}: the checkpoint does not fit {arch}/{encoder} with head {head!r} for tree {hierarchy.name!r}"
            f"{hint}; shape mismatches: {bad[:3]}, missing: {missing[:3]}, unexpected: {unexpected[:3]}"
        )
    model.load_state_dict(sd)
    return model.eval()


# ---------------------------------------------------------------------------------------------- model
class TransLU(nn.Module):
    """Dual-branch cross-domain transfer model.

    Args:
        source_model: the trained source model (Branch 2), from :func:`hierars.build_model` or
            :func:`load_source_model`, with a multi-level head. It is frozen in place.
        target_hierarchy: the target tree (Branch 1's BHCCM is sized for it).
        mapping: a :class:`CrossDomainMapping`, a built-in mapping name (``hierars/trees/mappings``) or a YAML
            path; required for CDSA and for the hybrid loss, validated against both trees.
        source_hierarchy: the source tree, if given it must equal ``source_model.hierarchy``.
        cdks, cdsa: enable the two components (Table X rows: both off = fine-tuning with an idle Branch 2).
        every: BIU placement (``"auto"``, ``"stage"`` or an int; see :func:`interaction_points`).
        in_channels: the target data's band count; must equal the source's.
        arch, encoder: if given, the source model must be this smp architecture / encoder.
        fusion, dropout: Branch 1's BHCCM settings.
        probe_size: input side for the one-off shape probe of the interaction points.
        n_heads, n_points, merge_init, deform_ratio, ffn_ratio: BIU settings (defaults: adapted heads,
            4 points, (0.5, 0.5) merge, 0.5, 0.25).

    Forward: x B×C×H×W → list of L tensors B×N_l×H×W (Branch 1, coarse→fine). Side effect:
    ``self.source_logits`` = Branch 2's L_s logits (B×N_s×H×W, no grad) for the same batch.
    """

    def __init__(self, source_model: nn.Module, target_hierarchy: Hierarchy,
                 mapping: CrossDomainMapping | str | Path | None = None, *, source_hierarchy: Hierarchy | None = None,
                 cdks: bool = True, cdsa: bool = True, every: int | str = "auto", in_channels: int | None = None,
                 arch: str | None = None, encoder: str | None = None, fusion: str = "bidirectional",
                 dropout: float = 0.1, probe_size: int = 64, n_heads: int | None = None, n_points: int = 4,
                 merge_init: tuple[float, float] = (0.5, 0.5), deform_ratio: float = 0.5,
                 ffn_ratio: float = 0.25) -> None:
        super().__init__()
        src_tree = _check_source(source_model, source_hierarchy, arch, encoder)
        info = describe_model(source_model)
        self.in_channels = int(info["in_channels"])
        if in_channels is not None and int(in_channels) != self.in_channels:
            raise TransferError(f"the target data has {in_channels} bands but the source model "
                                f"({info['encoder']}) takes {self.in_channels}; TransLU shares the input "
                                "between both branches")
        if isinstance(mapping, (str, Path)):
            p = Path(mapping)
            mapping = CrossDomainMapping.from_yaml(p) if p.suffix in (".yaml", ".yml") or p.exists() \
                else CrossDomainMapping.builtin(str(mapping))
        if mapping is not None:
            mapping.validate(src_tree, target_hierarchy)
        elif cdsa:
            raise TransferError("CDSA needs a cross-domain mapping (mapping=...)")
        self.source_hierarchy, self.hierarchy, self.mapping = src_tree, target_hierarchy, mapping
        self.head_name, self.num_levels_out = "bhccm", target_hierarchy.num_levels
        self.info = info

        source_model.requires_grad_(False)
        self.source = source_model.eval()
        self.branch1 = build_branch1(source_model, target_hierarchy, fusion=fusion, dropout=dropout)
        self.decoder_out_channels = self.branch1.decoder_out_channels
        unit_kwargs = {"n_heads": n_heads, "n_points": n_points, "merge_init": merge_init,
                       "deform_ratio": deform_ratio, "ffn_ratio": ffn_ratio}
        self.cdks = CDKS(self.branch1.encoder, self.source.encoder, self.in_channels, every, probe_size,
                         **unit_kwargs) if cdks else None
        self.gate = CDSAGate(mapping, src_tree, target_hierarchy) if cdsa else None
        self.source_logits: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> TransLU:
        super().train(mode)
        self.source.eval()  # Branch 2 stays in eval mode (frozen BatchNorm statistics, no dropout)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Branch 1, BIUs (everything but Branch 2)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise TransferError(f"input {tuple(x.shape)} has {x.shape[1] if x.ndim == 4 else '?'} bands; the "
                                f"source model ({self.info['encoder']}) takes B×{self.in_channels}×H×W")
        check = getattr(self.branch1, "check_input_shape", None)
        if check is not None:
            check(x)

    def source_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Branch 2 at decoder resolution (records the CDKS features): L_s tensors B×N_s×h×w, no grad."""
        with torch.no_grad():
            if self.cdks is not None:
                with self.cdks.record():
                    feats = self.source.encoder(x)
            else:
                feats = self.source.encoder(x)
            return self.source.segmentation_head.head(self.source.decoder(feats))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(x)
        self.source.eval()
        src = self.source_forward(x)
        try:
            if self.cdks is not None:
                with self.cdks.inject():
                    feats = self.branch1.encoder(x)
            else:
                feats = self.branch1.encoder(x)
        finally:
            if self.cdks is not None:
                self.cdks.clear()
        dec = self.branch1.decoder(feats)
        seg = self.branch1.segmentation_head
        if self.gate is not None:
            levels = self.gate(seg.head.level_logits(dec), src)  # Eqs. 9-14
            out = seg.head.fuse(levels)  # Eq. 15
        else:
            out = seg.head(dec)
        with torch.no_grad():
            self.source_logits = [self.source.segmentation_head.upsampling(z) for z in src]
        return [seg.upsampling(z) for z in out]

    def extra_repr(self) -> str:
        m = self.mapping.name if self.mapping is not None else None
        return (f"source={self.source_hierarchy.name!r}, target={self.hierarchy.name!r}, mapping={m!r}, "
                f"cdks={self.cdks is not None}, cdsa={self.gate is not None}")
