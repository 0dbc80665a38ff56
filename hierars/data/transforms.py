"""Joint image + mask augmentation with kornia (geometric ops shared, photometric on the image only).

:class:`SegAugment` works on a batch (``image`` B x C x H x W float, ``mask`` B x L x H x W int64)
or, via ``__call__`` on a dict, on a single design-doc sample (so it can be a dataset's
``transforms``). Geometric transforms (flips, 90-degree rotations, optional scale crop) are drawn
once and applied to both; the mask is warped with nearest-neighbour sampling and keeps 255 for
pixels that come from outside the image. Photometric jitter is per-band gain/offset noise,
which suits any number of bands (kornia's ColorJitter is RGB-only).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn

__all__ = ["SegAugment"]


class SegAugment(nn.Module):
    """Random flips / 90-degree rotations (+ optional resized crop) on image and mask together.

    Args:
        hflip, vflip: probabilities of horizontal / vertical flips.
        rot90: probability of a random multiple-of-90-degree rotation.
        scale: ``(min, max)`` area fraction of a random resized crop (None: no crop).
        band_jitter: std of a per-band multiplicative gain ``1 + N(0, s)`` and additive offset
            ``N(0, s)`` on the (normalised) image; 0 disables.
        ignore_index: mask value for pixels without source (padding of crops).
    """

    def __init__(self, hflip: float = 0.5, vflip: float = 0.5, rot90: float = 0.5,
                 scale: tuple[float, float] | None = None, band_jitter: float = 0.0,
                 ignore_index: int = 255) -> None:  # fmt: skip
        super().__init__()
        ops: list[nn.Module] = [K.RandomHorizontalFlip(p=hflip), K.RandomVerticalFlip(p=vflip),
                                K.RandomRotation90(times=(0, 3), p=rot90)]  # fmt: skip
        self.scale = scale
        self._ops = ops
        self.band_jitter = float(band_jitter)
        self.ignore_index = ignore_index
        self._seq = None

    def _sequence(self, size: tuple[int, int]) -> K.AugmentationSequential:
        ops = list(self._ops)
        if self.scale is not None:
            ops.append(K.RandomResizedCrop(size, scale=self.scale, ratio=(0.8, 1.25), p=1.0))
        return K.AugmentationSequential(*ops, data_keys=["input", "mask"])

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` B x C x H x W float, ``mask`` B x L x H x W int -> augmented (same shapes, dtypes)."""
        if (
            image.ndim != 4
            or mask.ndim != 4
            or image.shape[0] != mask.shape[0]
            or image.shape[-2:] != mask.shape[-2:]
        ):
            raise ValueError(f"SegAugment: expected image B x C x H x W and mask B x L x H x W with the same B, H, W; "
                             f"got {tuple(image.shape)} and {tuple(mask.shape)}")  # fmt: skip
        seq = self._sequence(tuple(image.shape[-2:]))
        # shift the mask by +1 so that zero padding marks "outside" pixels, warped with nearest
        m = mask.to(torch.float32) + 1.0
        img, m = seq(image, m)
        m = m.round().to(torch.long) - 1
        m[m < 0] = self.ignore_index
        if self.band_jitter > 0:
            b, c = img.shape[:2]
            gain = 1 + self.band_jitter * torch.randn(b, c, 1, 1, device=img.device)
            off = self.band_jitter * torch.randn(b, c, 1, 1, device=img.device)
            img = img * gain + off
        return img, m

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and isinstance(args[0], dict) and not kwargs:
            sample = dict(args[0])
            img, m = super().__call__(sample["image"][None], sample["mask"][None])
            sample["image"], sample["mask"] = img[0], m[0]
            return sample
        return super().__call__(*args, **kwargs)
