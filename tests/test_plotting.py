"""Per-level palettes derived from the tree, colouring, and the sample-triplet figure."""

from __future__ import annotations

import colorsys

import matplotlib
import numpy as np
import torch

from hierars.data.prepare import load_hierarchy
from hierars.plotting import colorize, plot_sample_triplets, stretch

matplotlib.use("Agg")


def _hue(rgb) -> float:
    return colorsys.rgb_to_hls(*(np.asarray(rgb) / 255.0))[0]


def test_palettes_follow_the_tree():
    h = load_hierarchy("mm5b")
    pals = h.palettes()
    assert [len(p) for p in pals] == list(h.num_classes) and all(p.dtype == np.uint8 for p in pals)
    for lvl in range(1, h.num_levels):
        for c, p in enumerate(h.parents[lvl].tolist()):
            d = abs(_hue(pals[lvl][c]) - _hue(pals[lvl - 1][p]))
            assert min(d, 1 - d) <= 0.06  # children are shades of the parent's hue
        # siblings are distinguishable
        for p in range(h.num_classes[lvl - 1]):
            kids = [c for c, q in enumerate(h.parents[lvl].tolist()) if q == p]
            cols = {tuple(pals[lvl][k]) for k in kids}
            assert len(cols) == len(kids)
    names = h.names[0]
    assert _hue(pals[0][names.index("water")]) > 0.5 and 0.2 < _hue(pals[0][names.index("vegetation")]) < 0.4


def test_colorize_ignore_black():
    pal = np.array([[10, 20, 30], [200, 100, 0]], np.uint8)
    lab = torch.tensor([[0, 1], [255, 1]])
    out = colorize(lab, pal)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 0].tolist() == [0, 0, 0]


def test_sample_triplet_figure(tmp_path):
    h = load_hierarchy("mm5b")
    rng = np.random.default_rng(0)
    leaf = torch.from_numpy(rng.integers(0, 18, (16, 16)))
    mask = torch.stack([h.lift(leaf, lvl) for lvl in range(3)])
    img = stretch(rng.random((4, 16, 16)), (3, 2, 1))
    assert img.shape == (16, 16, 3) and 0 <= img.min() and img.max() <= 1
    rows = [{"images": [("RGB", img), ("GF2", img), ("S2", img)], "mask": mask}] * 2
    fig = plot_sample_triplets(rows, h, tmp_path / "f.png", titles=["a", "b"])
    assert (tmp_path / "f.png").stat().st_size > 10000
    assert len(fig.axes) == 2 * 6
