"""Sensor band definitions and a small library of surface reflectance spectra (endmembers).

The synthetic benchmark renders surface reflectance in the ten Sentinel-2 bands used by MM-5B
(B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12) and derives the GaoFen-2-like (B, G, R, NIR) and the
RGB bands from them by averaging the piecewise-linear spectrum over each target band's
wavelength range (:func:`band_matrix`), so that every source sees the same surface.

Endmember values are typical surface reflectances (0-1) read off published spectra: the USGS
Spectral Library v7 (Kokaly et al. 2017; vegetation, soils, water, asphalt, concrete, roofing
materials) and Sentinel-2 L2A class signatures reported for Chinese and US landscapes. They are
representative, not measurements of a particular site: green vegetation has the red-edge rise
(B5 -> B7) and a high NIR plateau with water absorption in SWIR; water is dark beyond 700 nm
(turbid and algae-rich water brighter in green/red/red-edge); soils rise monotonically into the
SWIR; asphalt is dark and flat; concrete and bright roofs are bright and flat; red tiles have a
strong red step; blue painted steel roofs reflect most in blue.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "S2_BANDS",
    "S2_WAVELENGTHS",
    "GF2_BANDS",
    "RGB_BANDS",
    "BAND_RANGES",
    "MATERIALS",
    "MATERIAL_INDEX",
    "ENDMEMBERS",
    "band_matrix",
]

#: Sentinel-2 bands of MM-5B, and their central wavelengths (nm, S2A MSI).
S2_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_WAVELENGTHS = np.array([492.0, 560.0, 665.0, 704.0, 740.0, 783.0, 833.0, 865.0, 1614.0, 2202.0])
#: GaoFen-2 PMS multispectral bands (blue 450-520, green 520-590, red 630-690, NIR 770-890 nm).
GF2_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
#: Google-Earth-like true colour, stored in R, G, B order.
RGB_BANDS: tuple[str, ...] = ("red", "green", "blue")

#: wavelength range (nm) of each derived band.
BAND_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "gf2": {"blue": (450, 520), "green": (520, 590), "red": (630, 690), "nir": (770, 890)},
    "rgb": {"red": (600, 690), "green": (500, 590), "blue": (440, 510)},
}

# Endmember reflectance in the 10 S2 bands: B2 B3 B4 B5 B6 B7 B8 B8A B11 B12.
_SPECTRA: dict[str, tuple[float, ...]] = {
    # vegetation
    "crop_green": (0.035, 0.080, 0.040, 0.120, 0.330, 0.420, 0.450, 0.460, 0.240, 0.120),
    "maize": (0.030, 0.072, 0.034, 0.108, 0.335, 0.435, 0.470, 0.480, 0.228, 0.108),
    "soybean": (0.036, 0.078, 0.044, 0.128, 0.338, 0.418, 0.440, 0.450, 0.258, 0.138),
    "rice": (0.040, 0.076, 0.046, 0.112, 0.275, 0.335, 0.355, 0.360, 0.185, 0.088),
    "forest": (0.025, 0.045, 0.025, 0.075, 0.230, 0.290, 0.310, 0.320, 0.150, 0.070),
    "grass": (0.045, 0.090, 0.060, 0.130, 0.270, 0.320, 0.340, 0.350, 0.260, 0.150),
    "grass_dry": (0.070, 0.100, 0.120, 0.160, 0.210, 0.240, 0.260, 0.270, 0.330, 0.250),
    # soils
    "soil_dry": (0.090, 0.130, 0.170, 0.200, 0.220, 0.235, 0.250, 0.260, 0.330, 0.280),
    "soil_wet": (0.050, 0.070, 0.090, 0.105, 0.115, 0.125, 0.130, 0.135, 0.160, 0.120),
    "sand": (0.180, 0.230, 0.280, 0.310, 0.330, 0.340, 0.350, 0.355, 0.400, 0.350),
    # water
    "water_clear": (0.055, 0.045, 0.025, 0.018, 0.012, 0.010, 0.008, 0.008, 0.004, 0.003),
    "water_turbid": (0.070, 0.085, 0.070, 0.060, 0.030, 0.025, 0.020, 0.018, 0.008, 0.005),
    "water_algae": (0.045, 0.070, 0.045, 0.055, 0.045, 0.040, 0.035, 0.030, 0.008, 0.005),
    # built materials
    "asphalt": (0.065, 0.075, 0.085, 0.090, 0.095, 0.100, 0.105, 0.108, 0.130, 0.120),
    "concrete": (0.200, 0.220, 0.240, 0.250, 0.260, 0.265, 0.270, 0.275, 0.300, 0.270),
    "roof_grey": (0.150, 0.165, 0.175, 0.180, 0.185, 0.190, 0.195, 0.198, 0.220, 0.200),
    "roof_red_tile": (0.070, 0.090, 0.190, 0.230, 0.250, 0.260, 0.270, 0.275, 0.330, 0.290),
    "roof_metal_blue": (0.210, 0.190, 0.130, 0.120, 0.115, 0.112, 0.110, 0.110, 0.100, 0.090),
    "roof_metal_white": (0.380, 0.400, 0.410, 0.410, 0.410, 0.410, 0.410, 0.410, 0.380, 0.340),
    "track_red": (0.060, 0.070, 0.160, 0.190, 0.200, 0.210, 0.220, 0.225, 0.250, 0.220),
    "gravel": (0.110, 0.120, 0.125, 0.130, 0.135, 0.140, 0.145, 0.148, 0.170, 0.160),
}

#: material names, in the order of :data:`ENDMEMBERS` rows.
MATERIALS: tuple[str, ...] = tuple(_SPECTRA)
MATERIAL_INDEX: dict[str, int] = {m: i for i, m in enumerate(MATERIALS)}
#: float32 array (n_materials, 10): reflectance of each material in the S2 bands.
ENDMEMBERS = np.array([_SPECTRA[m] for m in MATERIALS], dtype=np.float32)


def band_matrix(sensor: str) -> np.ndarray:
    """Linear map from the 10 S2 bands to ``sensor``'s bands.

    Each target band is the mean of the piecewise-linear S2 spectrum over the band's wavelength
    range (5 nm steps). Returns float32 ``(n_out, 10)``; ``sensor`` is ``"s2"`` (identity),
    ``"gf2"`` or ``"rgb"``.
    """
    if sensor == "s2":
        return np.eye(len(S2_BANDS), dtype=np.float32)
    if sensor not in BAND_RANGES:
        raise ValueError(f"unknown sensor {sensor!r}; expected one of 's2', {sorted(BAND_RANGES)}")
    rows = []
    for lo, hi in BAND_RANGES[sensor].values():
        lam = np.arange(lo, hi + 1e-6, 5.0)
        row = np.zeros(len(S2_BANDS))
        for i in range(len(S2_BANDS)):  # weight of S2 band i = mean of its linear-interpolation hat
            onehot = np.zeros(len(S2_BANDS))
            onehot[i] = 1.0
            row[i] = np.interp(lam, S2_WAVELENGTHS, onehot).mean()
        rows.append(row / row.sum())
    return np.asarray(rows, dtype=np.float32)
