"""hierars.retrieval: TKANet, proportions, the archive index and CBIR / LCBIR / HIR search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hierars import Hierarchy, build_model
from hierars.retrieval import (
    TKA,
    ArchiveIndex,
    IndexMismatchError,
    ProportionLayout,
    TKANet,
    cbir,
    compute_features,
    hir,
    lcbir,
    load_tkanet,
    proportions_from_labels,
    proportions_from_logits,
    save_tkanet,
    train_tkanet,
)

# levels: [veg, built] / [tree, grass, building] / [tree, grass, building]
TINY = Hierarchy({"veg": {"tree": ["tree"], "grass": ["grass"]}, "built": {"building": ["building"]}}, name="tiny")
OTHER = Hierarchy({"veg": {"tree": ["tree"], "grass": ["grass"]}, "built": {"road": ["road"]}}, name="other")
LAYOUT = ProportionLayout.from_hierarchy(TINY)


def props(tree: float, grass: float, building: float) -> np.ndarray:
    """All-level proportion vector of TINY from leaf fractions."""
    return np.array([tree + grass, building, tree, grass, building, tree, grass, building], np.float32)


# ----------------------------------------------------------------------------------------- TKANet
@pytest.mark.parametrize("bands", [3, 10])
def test_tkanet_embeds_32d_for_any_band_count(bands):
    torch.manual_seed(0)
    net = TKANet(bands).eval()
    out = net(torch.randn(2, bands, 64, 64))
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()
    # Table I: five stride-2 stages, TKA after stages 3, 4, 5
    assert [type(m).__name__ for m in net.features] == ["ConvS2"] * 3 + ["TKA", "ConvS2", "TKA", "ConvS2", "TKA"]
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.85e6 < n_params < 0.95e6  # the spec's sketch: about 0.90 M


def test_tka_branches_share_one_kernel_per_tier():
    torch.manual_seed(0)
    tka = TKA(8).eval()
    depthwise = {n: p.shape for n, p in tka.named_parameters() if p.ndim == 4 and p.shape[1] == 1}
    assert depthwise == {"w1": (8, 1, 3, 3), "w2": (8, 1, 3, 3)}  # one tensor per tier, not one per branch
    # forward == the three dilated branches recomputed by hand with the same two tensors
    for bn in [*tka.bn1, *tka.bn2, tka.bn_pw]:
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 8, 16, 16)
    s = 0
    for i, d in enumerate((1, 2, 3)):
        y = F.relu(tka.bn1[i](F.conv2d(x, tka.w1, padding=d, dilation=d, groups=8)))
        s = s + F.relu(tka.bn2[i](F.conv2d(y, tka.w2, padding=d, dilation=d, groups=8)))
    torch.testing.assert_close(tka(x), F.relu(tka.bn_pw(tka.pw(s))))
    # a gradient through w1 collects contributions of all three branches
    tka.train()
    tka(x).sum().backward()
    assert tka.w1.grad is not None and tka.w1.grad.abs().sum() > 0


def test_tkanet_wrong_band_count_is_a_clear_error():
    with pytest.raises(ValueError, match="4 bands but the TKANet embedder expects 3"):
        TKANet(3)(torch.zeros(1, 4, 32, 32))


def test_train_tkanet_learns_separable_classes_and_roundtrips(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 32, 32, generator=g) * 100
    labels = np.array(["a", "b"] * 12)
    x[labels == "b", 0] += 80.0  # class b is much redder
    net = TKANet(3, widths=(8, 8, 16, 16, 16))
    res = train_tkanet(net, x, labels, epochs=6, batch_size=8, lr=5e-3, seed=0, progress=False)
    assert res.class_names == ["a", "b"] and len(res.history) == 6
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert net.input_mean[0] > 50  # normalisation taken from the training images
    path = save_tkanet(tmp_path / "tk.pt", net, res.classifier)
    back = load_tkanet(path)
    assert back.class_names == ["a", "b"] and back.in_channels == 3
    torch.testing.assert_close(back(x[:4]), net.eval()(x[:4]))
    with pytest.raises(ValueError, match="not a TKANet checkpoint"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        load_tkanet(tmp_path / "other.pt")


# ------------------------------------------------------------------------------------ proportions
def test_proportions_from_labels_per_level_and_ignore():
    leaf = torch.tensor([[[0, 0], [2, 255]]])  # tree, tree, building, ignore
    labels = TINY.lift_all(leaf).permute(1, 0, 2, 3)  # B × L × H × W
    p = proportions_from_labels(labels, TINY.num_classes)
    np.testing.assert_allclose(p[0], props(2 / 3, 0, 1 / 3), rtol=1e-6)
    p_all = proportions_from_labels(labels, TINY.num_classes, denominator="all")  # ignored pixel counts
    np.testing.assert_allclose(p_all[0], props(2 / 4, 0, 1 / 4), rtol=1e-6)


def test_proportions_from_logits_modes_and_flat_head():
    torch.manual_seed(0)
    logits = [torch.randn(2, n, 4, 4) for n in TINY.num_classes]
    for mode in ("jsps", "argmax", "soft"):
        p = proportions_from_logits(logits, TINY, mode)
        assert p.shape == (2, LAYOUT.size)
        for lv in range(3):
            np.testing.assert_allclose(p[:, LAYOUT.columns(lv)].sum(1), 1.0, rtol=1e-5)
    pj = proportions_from_logits(logits, TINY, "jsps")  # consistent: veg = tree + grass
    np.testing.assert_allclose(pj[:, 0], pj[:, 5] + pj[:, 6], rtol=1e-6)
    flat = proportions_from_logits([logits[-1]], TINY, "soft")
    np.testing.assert_allclose(flat[:, 0], flat[:, 5] + flat[:, 6], rtol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        proportions_from_logits([torch.randn(1, 4, 2, 2)], TINY)


def test_layout_weights_by_name_level_and_errors():
    cols, w = LAYOUT.weights(2, {"building": 4})
    assert (cols.start, cols.stop) == (5, 8) and w.tolist() == [1, 1, 4]
    cols, w = LAYOUT.weights("all", {"building": 4}, level_weights=[0.5, 1, 2])
    assert w.tolist() == [0.5, 0.5, 1, 1, 4, 2, 2, 8]
    _, w = LAYOUT.weights("all", {"2:building": 3})
    assert w.tolist() == [1, 1, 1, 1, 1, 1, 1, 3]
    with pytest.raises(ValueError, match="2 entries but the proportion vectors at level 1 have 3"):
        LAYOUT.weights(1, [1, 2])
    with pytest.raises(ValueError, match="unknown class 'road'"):
        LAYOUT.weights(1, {"road": 2})
    with pytest.raises(ValueError, match="one entry per level"):
        LAYOUT.weights("all", level_weights=[1, 1])
    with pytest.raises(ValueError, match="level must be"):
        LAYOUT.columns(5)


# -------------------------------------------------------------------------------------- search
def small_index(**kw) -> ArchiveIndex:
    emb = np.array([[0, 0], [1, 0], [2, 0], [10, 0]], np.float32)
    prop = np.stack([props(1, 0, 0), props(0.5, 0, 0.5), props(0.2, 0.1, 0.7), props(0, 0, 1)])
    return ArchiveIndex(emb, prop, LAYOUT, files=list("abcd"), labels=["x", "y", "y", "y"],
                        segmenter={"name": "seg", "fingerprint": "s1"}, embedder={"name": "emb", "fingerprint": "e1"},
                        tree=TINY, **kw)


def test_two_stage_rerank_changes_the_stage1_order():
    index = small_index()
    q_emb, q_prop = np.array([[0, 0]], np.float32), props(0.1, 0.1, 0.8)[None]
    c = cbir(index, q_emb, 3)
    assert c.indices.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(c.distances, [[0, 1, 2]])
    # HIR K=3 keeps {0,1,2} by embedding, then stage 2 puts 2 (closest proportions) first; 3 is never seen
    h = hir(index, q_emb, q_prop, k=2, K=3, level=2)
    assert h.indices.tolist() == [[2, 1]]
    # leaf level, w = 1: |.1-.2|+|.1-.1|+|.8-.7| = 0.2 and |.1-.5|+.1+|.8-.5| = 0.8
    np.testing.assert_allclose(h.distances, [[0.2, 0.8]], rtol=1e-5)
    np.testing.assert_allclose(h.stage1_distances, [[2, 1]])
    assert h.files(index) == [["c", "b"]] and h.labels(index).tolist() == [["y", "y"]]
    # LCBIR looks at the whole archive: item 3 (all building) is nearest by proportions
    assert lcbir(index, q_prop, 2, level=2).indices.tolist() == [[2, 3]]
    assert lcbir(index, q_prop, 4, level="all", chunk=3).indices[0, 0] == 2  # chunked == whole


def test_class_weights_change_the_stage2_order():
    emb = np.zeros((2, 2), np.float32)
    prop = np.stack([props(0.4, 0.0, 0.6), props(0.2, 0.5, 0.3)])
    index = ArchiveIndex(emb, prop, LAYOUT)
    q = props(0.0, 0.5, 0.5)[None]
    # w = 1 (leaves): d0 = .4+.5+.1 = 1.0, d1 = .2+0+.2 = 0.4 → 1 first; building x10: d0 = 1.9, d1 = 2.2 → 0 first
    assert hir(index, emb[:1], q, 2, K=2, level=2).indices.tolist() == [[1, 0]]
    assert hir(index, emb[:1], q, 2, K=2, level=2, class_weights={"building": 10}).indices.tolist() == [[0, 1]]


def test_batched_queries_match_single_queries():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    leaf = rng.dirichlet([1, 1, 1], size=200)
    prop = np.stack([props(*r) for r in leaf])
    index = ArchiveIndex(emb, prop, LAYOUT, metric="cosine")
    qe, qp = emb[:5] + 0.01, prop[:5]
    batch = hir(index, qe, qp, 10, K=40)
    for i in range(5):
        one = hir(index, qe[i], qp[i], 10, K=40)
        assert one.indices[0].tolist() == batch.indices[i].tolist()
    assert batch.indices[:, 0].tolist() == list(range(5))  # each query finds itself (distance ~0)


def test_ivf_matches_exact_on_clustered_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)) * 5
    emb = (centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 16))).astype(np.float32)
    prop = np.tile(props(1, 0, 0), (2000, 1))
    exact = ArchiveIndex(emb, prop, LAYOUT)
    ivf = ArchiveIndex(emb, prop, LAYOUT, ivf_nlist=20, nprobe=4)
    q = emb[:50] + 0.05 * rng.normal(size=(50, 16)).astype(np.float32)
    _, ie = exact.stage1(q, 10)
    _, ii = ivf.stage1(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ie, ii)])
    assert recall >= 0.95
    _, forced = ivf.stage1(q, 10, exact=True)
    assert (forced == ie).all()


def test_index_save_load_roundtrip_and_mismatch(tmp_path):
    for kw in ({}, {"ivf_nlist": 2, "nprobe": 2}):
        index = small_index(**kw)
        path = index.save(tmp_path / "archive.hirx")
        back = ArchiveIndex.load(path, segmenter="s1", embedder="e1", tree=TINY)
        np.testing.assert_array_equal(back.embeddings, index.embeddings)
        np.testing.assert_array_equal(back.proportions, index.proportions)
        assert back.files == list("abcd") and back.labels == ["x", "y", "y", "y"] and back.ivf_nlist == index.ivf_nlist
        q = np.array([[0.5, 0]], np.float32)
        assert cbir(back, q, 4).indices.tolist() == cbir(index, q, 4).indices.tolist()
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind
    with pytest.raises(IndexMismatchError, match="built with tree 'tiny'"):
        ArchiveIndex.load(path, tree=OTHER)
    with pytest.raises(IndexMismatchError, match="built with segmenter 'seg' .*fingerprint s1"):
        ArchiveIndex.load(path, segmenter=torch.nn.Linear(2, 2))
    (tmp_path / "junk.hirx").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a hierars retrieval index"):
        ArchiveIndex.load(tmp_path / "junk.hirx")


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="empty archive"):
        ArchiveIndex(np.zeros((0, 2)), np.zeros((0, LAYOUT.size)), LAYOUT)
    with pytest.raises(ValueError, match="empty archive"):
        ArchiveIndex.build([], TKANet(3), torch.nn.Conv2d(3, 3, 1), TINY, progress=False)
    index = small_index()
    q_emb, q_prop = np.zeros((1, 2), np.float32), props(1, 0, 0)[None]
    with pytest.raises(ValueError, match="k=5 is larger than the archive \\(4 images\\)"):
        cbir(index, q_emb, 5)
    with pytest.raises(ValueError, match="k=5 is larger than the archive"):
        hir(index, q_emb, q_prop, 5)
    with pytest.raises(ValueError, match="k=5 is larger than the archive"):
        lcbir(index, q_prop, 5)
    with pytest.raises(ValueError, match="2 entries but the proportion vectors at level 2 have 3"):
        hir(index, q_emb, q_prop, 2, level=2, class_weights=[1, 4])
    with pytest.raises(ValueError, match="7 entries but the all-level proportion vectors have 8"):
        lcbir(index, q_prop, 2, class_weights=[1] * 7)
    with pytest.raises(ValueError, match="Q×2"):
        cbir(index, np.zeros((1, 3), np.float32), 2)
    with pytest.raises(ValueError, match="shortlist K=1"):
        hir(index, q_emb, q_prop, 2, K=1)
    index.meta["in_channels"] = 3
    with pytest.raises(ValueError, match="query has 4 bands but the archive images have 3"):
        index.check_bands(4)


def test_build_from_models_and_query_band_check():
    torch.manual_seed(0)
    seg = build_model("fpn", "tu-resnet18", 3, TINY, head="bhccm", decoder_channels=32).eval()
    emb = TKANet(3, widths=(8, 8, 16, 16, 16)).eval()
    images = [np.random.default_rng(i).random((3, 64, 64), dtype=np.float32) for i in range(5)]
    index = ArchiveIndex.build(images, emb, seg, TINY, files=[f"im{i}" for i in range(5)], batch_size=2,
                               progress=False, seg_mean=[0.5] * 3, seg_std=[0.25] * 3)
    assert len(index) == 5 and index.dim == 32 and index.meta["in_channels"] == 3
    index.check_compatible(segmenter=seg, embedder=emb, tree=TINY)
    e, p = compute_features(images[3], emb, seg, TINY, seg_mean=[0.5] * 3, seg_std=[0.25] * 3)
    np.testing.assert_allclose(p, index.proportions[3:4], atol=1e-6)
    assert hir(index, e, p, 1, K=5).indices[0, 0] == 3
    with pytest.raises(ValueError, match="4 bands but the embedder expects 3"):
        compute_features(np.zeros((4, 64, 64), np.float32), emb, seg, TINY)
    with pytest.raises(IndexMismatchError, match="tree"):
        index.check_compatible(tree=OTHER)


def test_evaluate_methods_table_rows():
    from hierars.retrieval import evaluate_methods, hir_methods

    index = small_index()  # labels x, y, y, y
    q_emb, q_prop = np.array([[0, 0]], np.float32), props(0.1, 0.1, 0.8)[None]
    rows = hir_methods("building", 4.0, K=3, level=2)
    assert list(rows) == ["CBIR", "LCBIR", "HIR (K=3, w=1)", "HIR (K=3, w_building=4)"]
    out = evaluate_methods(index, q_emb, q_prop, ["y"], rows, ks=(1, 2))
    # CBIR ranks 0 (x) first: P@1 = 0, P@2 = 0.5, HIR mAP@2 = P(2) = 0.5 ; HIR ranks 2, 1 (y, y): all 1
    assert out["CBIR"]["P@1"] == 0 and out["CBIR"]["P@2"] == 0.5 and out["CBIR"]["mAP@2"] == 0.5
    assert out["HIR (K=3, w=1)"] == {"mAP@1": 1.0, "P@1": 1.0, "mAP_std@1": 1.0, "mAP@2": 1.0, "P@2": 1.0,
                                     "mAP_std@2": 1.0}
    with pytest.raises(ValueError, match="method must be one of"):
        evaluate_methods(index, q_emb, q_prop, ["y"], {"bad": {"method": "knn"}}, ks=(1,))
