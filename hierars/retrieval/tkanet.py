"""TKANet: the HIR paper's 32-d stage-1 feature extractor, its training and its checkpoints.

Architecture (HIR Table I; method-spec §6). ``ConvS2`` = 3×3 conv, stride 2 (no bias) + BN + ReLU::

    input C×H×W ─ ConvS2→32 ─ ConvS2→64 ─ ConvS2→128 ─ TKA(128)
                ─ ConvS2→192 ─ TKA(192) ─ ConvS2→256 ─ TKA(256) ─ GAP ─ FC 256→32 = embedding

For a 256² input the stages are 128², 64², 32², 16², 8² as in the table; any ``H × W`` and any band count
``C`` work (global average pooling). About 0.89 M parameters (the spec's sketch: ~0.90 M).

**TKA(C)** — tri-branch kernel-sharing atrous module (paper Fig. 2): two tiers; tier ``t`` has *one*
depthwise 3×3 kernel ``W_t`` (``C × 1 × 3 × 3``) applied by all three branches with dilations 1, 2, 3
(padding = dilation), so each branch sees a different receptive field with the same weights; the
branches are added, then a pointwise 1×1 conv ``C → C`` fuses the channels.

What the paper leaves open, and what we took (the method-spec's recommendations, all of them):

- BN + ReLU per branch after each tier (BN statistics are per branch, kernels shared);
- BN + ReLU after the pointwise conv;
- no residual connection;
- training: ``Linear(32 → n_scene_classes)`` + cross-entropy on scene labels with the withheld
  sub-categories merged (e.g. dense / medium / sparse residential → residential), as the paper does.
  Beyond that (not in the paper): AdamW, cosine learning-rate decay, random flips / 90° rotations.

Inputs are raw band values: the module holds per-band ``input_mean`` / ``input_std`` buffers (set from
the training images by :func:`train_tkanet`) and normalises inside ``forward``, so a checkpoint is
self-contained (:func:`save_tkanet` / :func:`load_tkanet`: band count, embedding size, class names).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from hierars.atomic import atomic_write_bytes

__all__ = ["ConvS2", "TKA", "TKANet", "TrainResult", "train_tkanet", "embed", "save_tkanet", "load_tkanet"]

FORMAT = "hierars.tkanet"
VERSION = 1


class ConvS2(nn.Sequential):
    """3×3 convolution with stride 2 (padding 1, no bias) + BatchNorm + ReLU: ``B×Cin×H×W → B×Cout×⌈H/2⌉×⌈W/2⌉``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class TKA(nn.Module):
    """Tri-branch kernel-sharing atrous module: ``B×C×H×W → B×C×H×W``.

    Args:
        channels: ``C``.
        dilations: dilation of each branch (default ``(1, 2, 3)``); every branch uses the same two kernels.

    Parameters: ``w1``, ``w2`` — the shared depthwise kernels of tier 1 and tier 2 (``C × 1 × 3 × 3``
    each); ``pw`` — the pointwise fusion conv; per-branch BatchNorms ``bn1[i]``, ``bn2[i]``.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        self.channels = int(channels)
        self.dilations = tuple(int(d) for d in dilations)
        self.w1 = nn.Parameter(torch.empty(channels, 1, 3, 3))
        self.w2 = nn.Parameter(torch.empty(channels, 1, 3, 3))
        for w in (self.w1, self.w2):
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        self.bn1 = nn.ModuleList(nn.BatchNorm2d(channels) for _ in self.dilations)
        self.bn2 = nn.ModuleList(nn.BatchNorm2d(channels) for _ in self.dilations)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(channels)

    def branch(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Branch ``i``: both tiers with the shared kernels at dilation ``dilations[i]``."""
        d = self.dilations[i]
        y = F.relu(self.bn1[i](F.conv2d(x, self.w1, padding=d, dilation=d, groups=self.channels)))
        return F.relu(self.bn2[i](F.conv2d(y, self.w2, padding=d, dilation=d, groups=self.channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch(x, 0)
        for i in range(1, len(self.dilations)):
            s = s + self.branch(x, i)
        return F.relu(self.bn_pw(self.pw(s)))


class TKANet(nn.Module):
    """HIR's TKANet: ``B×C×H×W`` raw bands → ``B×embed_dim`` embeddings (module docstring).

    Args:
        in_channels: number of bands ``C`` (3, 4, 10, ...).
        embed_dim: embedding size (32 in the paper).
        widths: output channels of the five ConvS2 stages (paper: 32, 64, 128, 192, 256).
        tka_stages: indices of the stages followed by a TKA module (paper: 2, 3, 4, i.e. stages 3–5).
        class_names: scene classes the net was trained on (informative; saved in checkpoints).

    Attributes: ``input_mean`` / ``input_std`` buffers (``C``) used to normalise the input in ``forward``
    (identity until set, e.g. by :func:`train_tkanet`).
    """

    def __init__(self, in_channels: int = 3, embed_dim: int = 32, widths: Sequence[int] = (32, 64, 128, 192, 256),
                 tka_stages: Sequence[int] = (2, 3, 4), class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim!r}")
        self.in_channels, self.embed_dim = in_channels, int(embed_dim)
        self.widths, self.tka_stages = tuple(int(w) for w in widths), tuple(int(s) for s in tka_stages)
        self.class_names = list(class_names) if class_names is not None else []
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(self.widths):
            layers.append(ConvS2(c, w))
            if i in self.tka_stages:
                layers.append(TKA(w))
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, self.embed_dim)
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Per-band mean / std (``C`` each) applied to raw inputs in ``forward``."""
        m = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        s = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
        if m.numel() != self.in_channels or s.numel() != self.in_channels:
            raise ValueError(f"normalisation needs {self.in_channels} means and stds, got {m.numel()} / {s.numel()}")
        self.input_mean.copy_(m)
        self.input_std.copy_(s.clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×C×H×W`` → ``B×embed_dim``; raises ``ValueError`` for a wrong band count."""
        if x.ndim != 4:
            raise ValueError(f"TKANet expects B×C×H×W input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the image has {x.shape[1]} bands but the TKANet embedder expects {self.in_channels}")
        x = (x - self.input_mean[None, :, None, None]) / self.input_std[None, :, None, None]
        return self.fc(self.features(x).mean((2, 3)))


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor | np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings of ``B×C×H×W`` (or one ``C×H×W``) raw images: float32 ``B×D`` (eval mode, restored after)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images, dtype=np.float32))
    x = x.float()
    if x.ndim == 3:
        x = x[None]
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    try:
        out = [model(x[i: i + batch_size].to(device)).float().cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    dim = getattr(model, "embed_dim", 0)
    return torch.cat(out).numpy() if out else np.zeros((0, dim), np.float32)


@dataclass
class TrainResult:
    """What :func:`train_tkanet` returns: the classifier head, class names and per-epoch history."""

    classifier: nn.Linear
    class_names: list[str]
    history: list[dict[str, float]] = field(default_factory=list)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips and 90° rotations per sample (square inputs rotate)."""
    b = x.shape[0]
    flip_h = torch.rand(b, generator=g) < 0.5
    flip_v = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        rot = torch.rand(b, generator=g) < 0.5
        x = torch.where(rot[:, None, None, None], x.transpose(-1, -2), x)
    return x


def train_tkanet(
    model: TKANet,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[Any] | np.ndarray | torch.Tensor,
    *,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    augment: bool = True,
    set_normalization: bool = True,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train TKANet with ``Linear(embed_dim → n_classes)`` + cross-entropy on scene labels (seeded).

    Args:
        model: the net to train in place (its band count must match the images).
        images: raw ``N × C × H × W`` images (all the same size).
        labels: ``N`` scene labels, already merged (strings or ints); the sorted unique values are the
            classes (stored in ``model.class_names``).
        epochs, batch_size, lr, weight_decay: AdamW with cosine decay to 1 % of ``lr`` over all steps.
        seed: seeds initialisation of the classifier, shuffling and augmentation.
        augment: random flips / 90° rotations.
        set_normalization: set the model's per-band mean / std from ``images`` first.
        progress: show a tqdm bar over epochs (loss and accuracy in the postfix).

    Returns:
        :class:`TrainResult` (the trained classifier, class names, history of
        ``{"epoch", "loss", "accuracy"}`` per epoch). The model is left in eval mode.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images, dtype=np.float32))
    x = x.float()
    if x.ndim != 4:
        raise ValueError(f"images must be N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no training images")
    if x.shape[1] != model.in_channels:
        raise ValueError(f"the images have {x.shape[1]} bands but the TKANet expects {model.in_channels}")
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if lab.shape != (x.shape[0],):
        raise ValueError(f"need one label per image: {x.shape[0]} images, labels of shape {lab.shape}")
    classes, y_np = np.unique(lab, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"need at least 2 scene classes to train, got {classes.tolist()}")
    y = torch.from_numpy(y_np.astype(np.int64))
    class_names = [str(c) for c in classes]
    device = torch.device(device)
    if set_normalization:
        model.set_normalization(x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist())
    torch.manual_seed(seed)
    classifier = nn.Linear(model.embed_dim, len(classes))
    model.to(device)
    classifier.to(device)
    params = list(model.parameters()) + list(classifier.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    g = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    model.train()
    classifier.train()
    bar = tqdm(range(epochs), desc="train TKANet", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        perm = torch.randperm(x.shape[0], generator=g)
        loss_sum = correct = seen = 0.0
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i: i + batch_size]
            if idx.numel() < 2:  # BatchNorm needs 2+ samples in training mode
                continue
            xb, yb = x[idx], y[idx]
            if augment:
                xb = _augment(xb, g)
            xb, yb = xb.to(device), yb.to(device)
            logits = classifier(model(xb))
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((logits.argmax(1) == yb).sum())
            seen += len(idx)
        row = {"epoch": float(epoch + 1), "loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}", refresh=False)
    model.eval()
    classifier.eval()
    model.class_names = class_names
    return TrainResult(classifier=classifier.cpu(), class_names=class_names, history=history)


def save_tkanet(path: str | Path, model: TKANet, classifier: nn.Linear | None = None,
                extra: dict[str, Any] | None = None) -> Path:
    """Write a self-contained TKANet checkpoint atomically (``torch.save`` of plain data + tensors).

    Stored: format tag, band count, embedding size, stage widths, TKA stages, class names, state dict
    (incl. the normalisation buffers), the optional classifier state and ``extra`` (plain data).
    """
    state = {
        "format": FORMAT, "version": VERSION, "in_channels": model.in_channels, "embed_dim": model.embed_dim,
        "widths": list(model.widths), "tka_stages": list(model.tka_stages), "class_names": list(model.class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classifier": None if classifier is None else {k: v.detach().cpu() for k, v in classifier.state_dict().items()},
        "extra": dict(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_tkanet(path: str | Path, map_location: str | torch.device = "cpu") -> TKANet:
    """Rebuild a :class:`TKANet` from :func:`save_tkanet` (eval mode). Raises for other files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TKANet checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a TKANet checkpoint (written by hierars.retrieval.save_tkanet)")
    model = TKANet(int(state["in_channels"]), int(state["embed_dim"]), state["widths"], state["tka_stages"],
                   state["class_names"])
    model.load_state_dict(state["state_dict"])
    return model.eval()
