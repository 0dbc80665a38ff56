"""The tree figures: layout, the marked JSPS / argmax nodes are the decoders' answers, the path-score bars."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from hierars import Hierarchy  # noqa: E402
from hierars.decoding import jsps, predict_levels  # noqa: E402
from hierars.plotting_tree import (  # noqa: E402
    ARGMAX_COLOR,
    JSPS_COLOR,
    plot_fusion_pixel,
    plot_level_batch,
    plot_path_scores,
    plot_tree,
    tree_layout,
)
from hierars.project.explorer import pixel_view  # noqa: E402


@pytest.fixture(scope="module")
def mm5b() -> Hierarchy:
    return Hierarchy.builtin("mm5b")


def _outlined(ax, color: str, layout: dict) -> set[tuple[int, int]]:
    """Nodes whose box outline has ``color``: the box centre is looked up in the layout."""
    by_pos = {(round(x, 3), round(y, 3)): node for node, (x, y) in layout.items()}
    out = set()
    for p in ax.patches:
        if isinstance(p, FancyBboxPatch) and p.get_facecolor()[3] == 0 and \
                np.allclose(p.get_edgecolor(), to_rgba(color)):
            bb = p.get_bbox()
            out.add(by_pos[(round((bb.x0 + bb.x1) / 2, 3), round((bb.y0 + bb.y1) / 2, 3))])
    return out


def test_layout_leaves_in_path_order_parents_centred(mm5b: Hierarchy) -> None:
    pos = tree_layout(mm5b)
    assert len(pos) == sum(mm5b.num_classes)
    for i, path in enumerate(mm5b.paths.tolist()):
        assert pos[(mm5b.num_levels - 1, path[-1])] == (mm5b.num_levels - 1.0, float(i))
    for lvl in range(1, mm5b.num_levels):  # a parent sits at the mean row of its children's leaves
        for c, parent in enumerate(mm5b.parents[lvl].tolist()):
            assert pos[(lvl, c)][0] == lvl
            rows = np.flatnonzero(mm5b.paths[:, lvl].numpy() == c)
            assert pos[(lvl, c)][1] == pytest.approx(rows.mean())
            prow = np.flatnonzero(mm5b.paths[:, lvl - 1].numpy() == parent)
            assert prow.min() <= pos[(lvl, c)][1] <= prow.max()


def test_marked_paths_are_the_decoders_answers(mm5b: Hierarchy, tmp_path) -> None:
    g = torch.Generator().manual_seed(3)
    logits = [torch.randn(1, n, 6, 6, generator=g) * 2 for n in mm5b.num_classes]
    ref_jsps = jsps(logits, mm5b)[0]
    ref_argmax = predict_levels(logits, mm5b, "argmax")[0]
    pos = tree_layout(mm5b)
    differing = 0
    for r, c in [(0, 0), (2, 3), (5, 5), (4, 1)]:
        v = pixel_view([z[0] for z in logits], mm5b, r, c)
        fig, ax = plt.subplots()
        plot_tree(mm5b, ax, level_probs=v.level_probs, node_probs=v.node_probs, jsps_path=v.jsps_path,
                  argmax_path=v.argmax_path)
        marked_jsps = _outlined(ax, JSPS_COLOR, pos)
        marked_argmax = _outlined(ax, ARGMAX_COLOR, pos)
        plt.close(fig)
        expect_jsps = {(lvl, int(ref_jsps[lvl, r, c])) for lvl in range(mm5b.num_levels)}
        expect_argmax = {(lvl, int(ref_argmax[lvl, r, c])) for lvl in range(mm5b.num_levels)}
        assert marked_jsps == expect_jsps
        assert marked_argmax == expect_argmax
        path = sorted(marked_jsps)
        assert mm5b.path_id(torch.tensor([p[1] for p in path]).view(-1, 1, 1)).item() >= 0  # a root-to-leaf path
        differing += marked_jsps != marked_argmax
    assert differing >= 1  # random logits: argmax leaves the tree somewhere in these pixels


def test_plot_tree_rejects_a_non_path_and_writes_the_figure(mm5b: Hierarchy, tmp_path) -> None:
    with pytest.raises(ValueError, match="not a root-to-leaf path"):
        plot_tree(mm5b, jsps_path=[0, 3, 17])  # bare_land leaf under vegetation
    with pytest.raises(ValueError, match="one class per level"):
        plot_tree(mm5b, argmax_path=[0, 9, 0])
    with pytest.raises(ValueError, match="level_probs"):
        plot_tree(mm5b, level_probs=[np.ones(4), np.ones(9)])
    out = tmp_path / "tree.png"
    fig = plot_tree(mm5b, out_path=out)
    plt.close(fig)
    assert out.stat().st_size > 20_000
    names = {t.get_text() for t in fig.axes[0].texts}
    assert {"paddy_field", "transportation", "artificial_surface"} <= names


def test_path_scores_bars_and_marks(mm5b: Hierarchy) -> None:
    scores = -np.arange(len(mm5b.paths), dtype=float) / 3
    fig = plot_path_scores(mm5b, scores, jsps_index=0, argmax_path=mm5b.paths[4].tolist())
    ax = fig.axes[0]
    filled = [p for p in ax.patches if p.get_facecolor()[3] > 0]
    assert [p.get_width() for p in filled] == pytest.approx(scores.tolist())
    outlined = [p for p in ax.patches if p.get_facecolor()[3] == 0]
    assert sorted(p.get_y() + p.get_height() / 2 for p in outlined) == pytest.approx([0, 4])
    plt.close(fig)
    fig = plot_path_scores(mm5b, scores, jsps_index=0, argmax_path=[0, 3, 17])
    assert any("not a path" in t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    with pytest.raises(ValueError, match="one entry per path"):
        plot_path_scores(mm5b, scores[:-1])


def test_fusion_and_batch_figures(mm5b: Hierarchy) -> None:
    before = [np.zeros(n) for n in mm5b.num_classes]
    after = [np.eye(n)[0] * 5 for n in mm5b.num_classes]
    fig = plot_fusion_pixel(mm5b, before, after)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights[:4] == pytest.approx([0.25] * 4)  # uniform before
    assert heights[4] == pytest.approx(np.exp(5) / (np.exp(5) + 3))
    plt.close(fig)
    masks = torch.randint(0, 4, (2, 3, 8, 8))
    fig = plot_level_batch([np.zeros((8, 8, 3))] * 2, masks, mm5b)
    assert len(fig.axes) == 8
    plt.close(fig)
    with pytest.raises(ValueError, match="masks must be"):
        plot_level_batch([np.zeros((8, 8, 3))], masks, mm5b)
