"""Rendering: the sensors (:data:`SOURCES`), render-grid surface reflectance from a layout's
material mix, and each source's image (spectral mapping, resampling, PSF, gain, haze, noise,
quantisation)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hierars.data.spectra import ENDMEMBERS, band_matrix
from hierars.data.synthetic.grid import block_mean, upsample
from hierars.data.synthetic.layout import SceneLayout

__all__ = ["SOURCES", "render_reflectance", "render_source"]

#: source name -> (resolution in m, band names, dtype)
SOURCES: dict[str, tuple[float, tuple[str, ...], str]] = {
    "rgb": (2.0, ("red", "green", "blue"), "uint8"),
    "gf2": (4.0, ("blue", "green", "red", "nir"), "uint16"),
    "s2": (10.0, ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"), "uint16"),
}


def render_reflectance(layout: SceneLayout, rng: np.random.Generator, noise: float = 0.01) -> np.ndarray:
    """10-band S2 surface reflectance on the render grid: float32 (10, n, n).

    ``frac * E[a] + (1 - frac) * E[b]``, times gain and shade, times a smooth per-pixel spectral
    variation (brightness and a vegetation/soil tilt), plus ``noise`` relative texture.
    """
    n = layout.sem.shape[0]
    f = layout.frac
    scale = layout.gain * layout.shade
    # spatially smooth "phenology/moisture" tilt: moves spectra along the NIR and SWIR directions
    tilt = upsample(rng.standard_normal((8, 8)), n, n)
    out = np.empty((ENDMEMBERS.shape[1], n, n), np.float32)
    speckle = rng.standard_normal((n, n)).astype(np.float32)
    for b in range(ENDMEMBERS.shape[1]):
        e = ENDMEMBERS[:, b]
        band = e[layout.mat_a] * f + e[layout.mat_b] * (1.0 - f)
        t = 0.04 * tilt if b >= 6 else 0.0
        out[b] = band * scale * (1.0 + t + noise * speckle)
    return np.clip(out, 0.0, 1.0)


def render_source(refl: np.ndarray, render_res: float, source: str, rng: np.random.Generator,
                  haze: float = 0.02, noise_scale: float = 1.0) -> np.ndarray:  # fmt: skip
    """One source's image from render-grid reflectance ``refl`` (10 x n x n).

    Spectral mapping (:func:`hierars.data.spectra.band_matrix`), block-mean resampling to the
    source grid, PSF blur, per-acquisition gain and haze, sensor noise and quantisation.
    Returns uint8 (3, n', n') for ``rgb``; uint16 reflectance x 10^4 for ``gf2`` and ``s2``.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    res, _, _ = SOURCES[source]
    factor = res / render_res
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
        raise ValueError(f"{source}: resolution {res} m is not a multiple of the render grid {render_res} m")
    factor = int(round(factor))
    mat = band_matrix(source)
    img = np.stack([sum(float(wt) * refl[i] for i, wt in enumerate(row) if wt > 0) for row in mat])
    if factor > 1:
        img = block_mean(img, factor)
    c, h, w = img.shape
    sigma = {"rgb": 0.5, "gf2": 0.45, "s2": 0.4}[source]
    for b in range(c):
        extra = 0.9 if source == "s2" and b in (3, 4, 5, 7, 8, 9) else 0.0  # native 20 m bands
        img[b] = ndimage.gaussian_filter(img[b], np.hypot(sigma, extra), mode="nearest")
    lam = np.array([492, 560, 665, 704, 740, 783, 833, 865, 1614, 2202], np.float32)
    lam = mat @ lam
    hz = max(0.0, haze) * rng.uniform(0.3, 1.0)
    field = np.clip(1 + 0.5 * upsample(rng.standard_normal((4, 4)), h, w), 0, None)
    gains = rng.uniform(0.94, 1.06) * rng.uniform(0.98, 1.02, c).astype(np.float32)
    sd = {"rgb": 0.008, "gf2": 0.004, "s2": 0.003}[source] * noise_scale
    img = img * gains[:, None, None] + hz * (lam[:, None, None] / 492.0) ** -1.5 * field
    img = img + sd * rng.standard_normal(img.shape).astype(np.float32)
    if source == "rgb":  # tone-mapped 8-bit, as in Google Earth imagery
        return np.round(255 * np.clip(img / 0.32, 0, 1) ** (1 / 1.8)).astype(np.uint8)
    return np.round(np.clip(img, 1e-4, 6.5) * 10000).astype(np.uint16)
