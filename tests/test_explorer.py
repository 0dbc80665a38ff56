"""The path explorer (project/explorer.py) and the teaching numbers (project/teaching.py): one pixel's numbers agree
with hierars' decoders, heads and losses."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from hierars import Hierarchy  # noqa: E402
from hierars.decoding import jsps, predict_levels  # noqa: E402
from hierars.heads import BHCCM  # noqa: E402
from hierars.losses import hsc_loss, path_scores  # noqa: E402
from hierars.models import HierarchicalSegmentationHead  # noqa: E402
from hierars.project.explorer import (  # noqa: E402
    ExplorerData,
    disagreement_mask,
    explore,
    explorer_data,
    pick_pixels,
    pixel_view,
)
from hierars.project.teaching import bhccm_fusion_trace, fusion_table, hsc_terms  # noqa: E402

SMALL = Hierarchy({"A": ["a1", "a2"], "B": ["b1"]}, name="small")


def _constructed_tile() -> tuple[list[torch.Tensor], tuple[int, int]]:
    """4×5 logits of SMALL: everywhere A/a1 confidently, except pixel (2, 3) with q1 = (.55, .45), q2 = (.3, .3, .4):
    argmax says (A, b1), not a path; JSPS scores A/a1 = log .55 + log .3 = -1.80 < B/b1 = log .45 + log .4 = -1.71."""
    z1 = torch.zeros(2, 4, 5)
    z1[0] = 3.0
    z2 = torch.zeros(3, 4, 5)
    z2[0] = 3.0
    z1[:, 2, 3] = torch.tensor([0.55, 0.45]).log()
    z2[:, 2, 3] = torch.tensor([0.3, 0.3, 0.4]).log()
    return [z1, z2], (2, 3)


def _data(logits: list[torch.Tensor]) -> ExplorerData:
    batch = [z[None] for z in logits]
    return ExplorerData(image=torch.rand(3, *logits[0].shape[-2:]), mask=torch.zeros(2, *logits[0].shape[-2:],
                        dtype=torch.long), logits=logits, jsps=jsps(batch, SMALL)[0],
                        argmax=predict_levels(batch, SMALL, "argmax")[0])


def test_constructed_pixel_where_jsps_and_argmax_differ() -> None:
    logits, (r, c) = _constructed_tile()
    v = pixel_view(logits, SMALL, r, c)
    assert v.argmax_path == [0, 2] and not v.argmax_is_path
    assert v.jsps_path == [1, 2] and v.jsps_index == 2
    assert v.path_scores == pytest.approx([math.log(.55 * .3), math.log(.55 * .3), math.log(.45 * .4)], abs=1e-5)
    assert v.level_probs[1] == pytest.approx([0.3, 0.3, 0.4], abs=1e-6)
    # m: P(p) ∝ Π q over the 3 paths, marginalised per node; a parent's mass is its children's sum
    joint = np.array([.55 * .3, .55 * .3, .45 * .4])
    joint /= joint.sum()
    assert v.node_probs[1] == pytest.approx(joint, abs=1e-6)
    assert v.node_probs[0] == pytest.approx([joint[:2].sum(), joint[2]], abs=1e-6)
    data = _data(logits)
    differ = disagreement_mask(data)
    assert differ.sum() == 1 and differ[r, c]
    assert pick_pixels(data)[0] == (r, c)


def test_pixel_view_matches_the_decoders_everywhere() -> None:
    h = Hierarchy.builtin("mm5b")
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(1, n, 5, 7, generator=g) * 2 for n in h.num_classes]
    ref_j, ref_a = jsps(logits, h)[0], predict_levels(logits, h, "argmax")[0]
    ref_s = path_scores(logits, h.paths)[0]
    differ = 0
    for r in range(5):
        for c in range(7):
            v = pixel_view([z[0] for z in logits], h, r, c)
            assert v.jsps_path == ref_j[:, r, c].tolist()
            assert v.argmax_path == ref_a[:, r, c].tolist()
            assert h.path_id(torch.tensor(v.jsps_path).view(-1, 1, 1)).item() == v.jsps_index >= 0
            assert int(np.argmax(v.path_scores)) == v.jsps_index
            assert v.path_scores == pytest.approx(ref_s[:, r, c].numpy(), abs=1e-5)
            for lvl in range(1, h.num_levels):  # a node's mass is the sum of its children's
                parent = h.parents[lvl].numpy()
                sums = np.bincount(parent, weights=v.node_probs[lvl], minlength=h.num_classes[lvl - 1])
                assert sums == pytest.approx(v.node_probs[lvl - 1], abs=1e-5)
            differ += v.jsps_path != v.argmax_path
    assert differ > 0
    with pytest.raises(ValueError, match="outside"):
        pixel_view([z[0] for z in logits], h, 5, 0)


def test_flat_model_pixel_view() -> None:
    h = Hierarchy.builtin("mm5b")
    leaf = torch.randn(18, 3, 3)
    v = pixel_view([leaf], h, 1, 2)
    assert v.jsps_path == h.paths[int(leaf[:, 1, 2].argmax())].tolist() == v.argmax_path
    assert v.level_probs[-1] == pytest.approx(leaf[:, 1, 2].softmax(0).numpy(), abs=1e-6)


def test_static_fallback_writes_the_figure_and_widget_builds(tmp_path) -> None:
    logits, (r, c) = _constructed_tile()
    data = _data(logits)
    out = tmp_path / "explorer.png"
    fig = explore(data, SMALL, interactive=False, out_path=out)
    assert out.stat().st_size > 10_000
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith(f"A: pixel (row {r}, col {c})") and "argmax ≠ JSPS" in t for t in titles), titles
    ipywidgets = pytest.importorskip("ipywidgets")
    out2 = tmp_path / "explorer2.png"
    widget = explore(data, SMALL, interactive=True, out_path=out2, pixels=[(0, 0)])
    assert isinstance(widget, ipywidgets.VBox) and out2.is_file()


class _Tiny(nn.Module):
    """encoder/decoder stand-in (one conv) + the hierarchical head, as build_model wires it."""

    def __init__(self, fusion: str) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        head = BHCCM(8, (2, 3, 5), fusion=fusion)
        g = torch.Generator().manual_seed(1)
        for p in head.parameters():  # α, β away from 1 so a wrong coefficient would show
            if p.ndim == 0:
                p.data = torch.rand((), generator=g) + 0.5
        self.segmentation_head = HierarchicalSegmentationHead(head, nn.Upsample(scale_factor=2))

    def forward(self, x):
        return self.segmentation_head(F.avg_pool2d(self.body(x), 2))


@pytest.mark.parametrize("fusion", ["bidirectional", "coarse_to_fine", "fine_to_coarse"])
def test_bhccm_trace_terms_sum_to_the_head_output(fusion: str) -> None:
    h = Hierarchy({"X": {"x1": ["p", "q"], "x2": ["r"]}, "Y": {"y1": ["s", "t"]}}, name="t3")
    torch.manual_seed(0)
    model = _Tiny(fusion).eval()
    image = torch.randn(3, 16, 16)
    trace = bhccm_fusion_trace(model, image, 9, 5)
    assert trace["cell"] == (4, 2) and trace["fusion"] == fusion
    assert trace["max_error"] < 1e-5
    with torch.no_grad():
        out = model(image[None])  # upsampled ×2: head cell (4, 2) covers pixel (9, 5)
    for lvl in range(3):
        assert trace["Y"][lvl] == pytest.approx(out[lvl][0, :, 9, 5].double().numpy(), abs=1e-5)
    head = model.segmentation_head.head
    if fusion != "fine_to_coarse":
        (label, term), *_ = trace["terms"]["F'2"]
        assert label == "β2·F2" and term == pytest.approx(float(head.c2f_beta["1"].detach()) * trace["F"][1])
        assert len(trace["terms"]["F'3"]) == 3  # β3·F3 + α13·MB13(F1) + α23·MB23(F2)
    if fusion != "coarse_to_fine":
        assert [t for t, _ in trace["terms"]["Y1"]] == ["β'1·F1", "α21·MB21(F'2)", "α31·MB31(F'3)"]
    table = fusion_table(trace, h, 2)
    assert list(table.index) == h.names[2] and table.iloc[:, -1].sum() == pytest.approx(1, abs=2e-3)


def test_trace_needs_a_bhccm_head() -> None:
    with pytest.raises(ValueError, match="BHCCM head"):
        bhccm_fusion_trace(nn.Conv2d(3, 3, 1), torch.zeros(3, 4, 4), 0, 0)


def test_hsc_terms_are_the_loss_parts() -> None:
    h = Hierarchy.builtin("mm5b")
    g = torch.Generator().manual_seed(2)
    logits = [torch.randn(2, n, 6, 6, generator=g) for n in h.num_classes]
    leaf = torch.randint(0, 18, (2, 6, 6), generator=g)
    labels = torch.stack([h.lift(leaf, lvl) for lvl in range(3)], 1)
    labels[0, :, 0, 0] = 255
    t = hsc_terms(logits, labels, h, mu=0.7)
    for lvl in range(3):
        assert t[f"CE_L{lvl + 1}"] == pytest.approx(float(F.cross_entropy(logits[lvl], labels[:, lvl],
                                                                          ignore_index=255)), rel=1e-5)
    assert t["sum"] == pytest.approx(t["L_HSC"], rel=1e-5)
    assert t["L_HSC"] == pytest.approx(float(hsc_loss(logits, labels, h, mu=0.7)), rel=1e-6)
    assert t["path"] > 0


def test_explorer_data_runs_a_model() -> None:
    h = Hierarchy({"X": {"x1": ["p", "q"], "x2": ["r"]}, "Y": {"y1": ["s", "t"]}}, name="t3")
    model = _Tiny("bidirectional")
    data = explorer_data(model, {"image": torch.randn(3, 16, 16), "mask": torch.zeros(3, 16, 16, dtype=torch.long)}, h)
    assert [tuple(z.shape) for z in data.logits] == [(2, 16, 16), (3, 16, 16), (5, 16, 16)]
    assert (h.path_id(data.jsps) >= 0).all() and data.argmax.shape == (3, 16, 16)
    assert model.training  # restored


def test_click_on_the_map_selects_the_pixel(tmp_path) -> None:
    """A mouse click on the ipympl map (row 2, col 3) redraws the tree for that pixel."""
    pytest.importorskip("ipympl")
    from matplotlib.backend_bases import MouseEvent

    from hierars.project.explorer import _Explorer

    logits, (r, c) = _constructed_tile()
    ex = _Explorer(_data(logits), SMALL, None, (0, 0))
    assert (ex.row.value, ex.col.value) == (0, 0)
    ax = ex.canvas.figure.axes[1]
    ex.canvas.draw()
    x, y = ax.transData.transform((c, r))
    ex.canvas.callbacks.process("button_press_event", MouseEvent("button_press_event", ex.canvas, x, y, button=1))
    assert (ex.row.value, ex.col.value) == (r, c)
    assert all(list(m.get_xdata()) == [c] and list(m.get_ydata()) == [r] for m in ex.markers)


def test_interactive_none_means_static_outside_a_frontend(tmp_path) -> None:
    from hierars.project.explorer import has_interactive_frontend

    assert has_interactive_frontend() is False  # plain Python, no kernel
    logits, _ = _constructed_tile()
    fig = explore(_data(logits), SMALL, interactive=None, out_path=tmp_path / "e.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "e.png").is_file()


def test_frontend_detection_in_a_real_kernel() -> None:
    """The kernel sees allow_stdin of the request: True as JupyterLab sends it, False as papermill (nbclient) does."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    if "hierars" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("jupyter kernel 'hierars' is not installed")
    km, kc = start_new_kernel(kernel_name="hierars")
    try:
        seen = {}
        for allow in (True, False):
            out = []
            kc.execute_interactive("from hierars.project.explorer import has_interactive_frontend as f; print(f())",
                                   allow_stdin=allow, timeout=120,
                                   output_hook=lambda m, out=out: out.append(m["content"].get("text", "")))
            seen[allow] = "".join(out).strip()
        assert seen == {True: "True", False: "False"}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
