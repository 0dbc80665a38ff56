"""The retrieval stage: the experiment function (training layer) on tiny arrays, the params glue and the GID-15
profile (skipped without ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hierars import Hierarchy
from hierars.retrieval import ArchiveIndex, ProportionLayout, load_tkanet
from hierars.training import TrainConfig
from hierars.training.retrieval import (
    RetrievalSplit,
    gallery_results,
    gt_proportions,
    loo_oracle,
    method_key,
    run_retrieval_experiment,
    stratified_split,
)

WHDLD = Hierarchy.builtin("whdld")
SCENES = {"forest": 4, "lake": 4, "built": 4}  # + residential with two sub-labels


def _tiny_split(rng: np.random.Generator, n_per: int, size: int = 32) -> RetrievalSplit:
    """Scenes whose images and labels differ by dominant class: forest → vegetation (4), lake → water (6),
    built → pavement (3), residential dense/sparse → building (1) on much / little of the patch."""
    raw_of = {"forest": 4, "lake": 6, "built": 3}
    images, masks, scenes, subs = [], [], [], []
    for scene, raw in [*raw_of.items(), ("residential", 1), ("residential", 1)]:
        sub = "" if scene != "residential" else ("dense" if "dense" not in subs else "sparse")
        for _ in range(n_per):
            lab = np.full((size, size), 4 if scene == "residential" else raw, np.int64)
            if scene == "residential":
                lab[: size * (3 if sub == "dense" else 1) // 4] = 1
            img = np.stack([lab * 30.0 + rng.normal(0, 5, lab.shape) + b for b in range(3)]).astype(np.float32)
            images.append(img)
            masks.append(WHDLD.encode(lab).numpy().astype(np.uint8))
            scenes.append(scene)
            subs.append(sub)
    return RetrievalSplit(np.stack(images), np.stack(masks), scenes, subs, [f"im{i}" for i in range(len(images))])


def test_run_retrieval_experiment_tiny(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    archive, query = _tiny_split(rng, 3), _tiny_split(rng, 1)
    cfg = TrainConfig(arch="fpn", encoder="tu-convnext_atto", decoder_channels=64, head="bhccm", loss="hsc",
                      iterations=2, batch_size=2, progress=False, num_threads=1)
    res = run_retrieval_experiment(archive, query, WHDLD, cfg, tmp_path, tkanet_epochs=1, tkanet_batch_size=4,
                                   Ks=(8,), ks=(1, 3), weighted_class="building", weight=4.0)
    exps = {(r["experiment"], r["proportions"], r["key"]) for r in res.rows}
    assert ("tableIV", "predicted", "CBIR") in exps and ("tableV", "predicted", "HIR_K8_w4") in exps
    assert ("tableV", "ground truth", "HIR_K8_w1") in exps and ("tableIV", "ground truth", "CBIR") not in exps
    for key in ("tableIV_CBIR_P@3", "tableIV_HIR_K8_w1_mAP@3", "tableV_HIR_K8_w4_mAP_std@1", "tableV_LCBIR_gt_P@3",
                "oracle_loo_leaf_P@3", "segmenter_mIoU_L2_jsps", "tkanet_train_accuracy"):
        assert 0.0 <= res.metrics[key] <= 1.0, key
    assert res.metrics["n_query_residential"] == 2 and res.metrics["n_archive"] == len(archive)
    # ground-truth proportions separate dense from sparse perfectly (building share 3/4 vs 1/4)
    assert res.metrics["tableV_LCBIR_gt_P@3"] == pytest.approx(1.0)
    assert res.metrics["oracle_loo_leaf_P@3"] == pytest.approx(1.0)
    assert {p.name for p in tmp_path.iterdir()} >= {"segmenter", "tkanet.pt", "index.npz"}
    index = ArchiveIndex.load(tmp_path / "index.npz", segmenter=res.segmenter, embedder=res.tkanet, tree=WHDLD)
    assert len(index) == len(archive) and index.labels == list(archive.scenes)
    assert load_tkanet(tmp_path / "tkanet.pt").class_names == sorted(set(archive.scenes))
    shown = gallery_results(res, 3, k=4)
    assert list(shown)[:2] == ["CBIR", "LCBIR"] and all(v.shape == (4,) for v in shown.values())
    json.dumps(res.metrics)  # plain scalars


def test_run_retrieval_experiment_rejects_bad_cutoffs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    archive, query = _tiny_split(rng, 1), _tiny_split(rng, 1)
    with pytest.raises(ValueError, match="cut-offs"):
        run_retrieval_experiment(archive, query, WHDLD, TrainConfig(iterations=1), tmp_path, Ks=(4,), ks=(5,))


def test_helpers() -> None:
    assert method_key("HIR (K=75, w_building=4)") == "HIR_K75_w4"
    assert method_key("HIR (K=20, w=1)") == "HIR_K20_w1" and method_key("LCBIR") == "LCBIR"
    groups = ["a"] * 10 + ["b"] * 3 + ["c"]
    q = stratified_split(groups, 0.3, seed=0)
    assert q[:10].sum() == 3 and q[10:13].sum() == 1 and not q[13]
    assert (stratified_split(groups, 0.3, seed=0) == q).all()
    lay = ProportionLayout([2], [["x", "y"]])
    p = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    assert loo_oracle(p, ["u", "u", "r", "r"], lay, (1,), 0) == {"P@1": 1.0}


def test_stage_config_and_synthetic_defaults() -> None:
    from hierars.project.retrieval_stage import experiment_kwargs, retrieval_config

    cfg = retrieval_config({"retrieval": {"segmenter": {"iterations": 3}}})
    assert cfg.segmenter_config().iterations == 3 and cfg.segmenter_config().head == "bhccm"
    assert experiment_kwargs(cfg)["weighted_class"] == "building"
    assert experiment_kwargs(retrieval_config({"retrieval": {"source": "gid15"}}))["weighted_class"] == "residential"
    with pytest.raises(ValueError):
        retrieval_config({"retrieval": {"sourse": "gid15"}})
    with pytest.raises(ValueError):
        retrieval_config({"retrieval": {"segmenter": {"iteratons": 3}}}).segmenter_config()


def test_gid15_profile_reading(shared_data: Path) -> None:
    """Scenes from the folders, urban + rural residential merged in the scene AND pixel labels (sub-label =
    folder), a split stratified by folder; design.md's oracle (P@10 0.685 among the 82 residential scenes)."""
    from hierars.data import gid15_items, read_raster
    from hierars.project.retrieval_stage import load_retrieval_splits, retrieval_config

    root = shared_data / "gid15"
    params = {"seed": 0, "retrieval": {"source": "gid15", "root": str(root), "max_per_scene": 2,
                                       "query_fraction": 0.5}}
    archive, query, h = load_retrieval_splits(params, retrieval_config(params))
    assert h.name == "gid15_merged" and "residential" in h.names[-1] and "urban_residential" not in h.names[-1]
    assert len(archive) == len(query) == 15 and archive.images.shape[1:] == (3, 224, 224)
    assert set(archive.scenes) == set(query.scenes) and "urban_residential" not in set(archive.scenes)
    res = archive.scenes == "residential"
    assert sorted(archive.subs[res]) == ["rural_residential", "urban_residential"]
    assert archive.masks.shape[1:] == (3, 224, 224) and archive.masks.dtype == np.uint8
    # oracle over every residential patch (labels only)
    items = [it for it in gid15_items(root) if it.scene.endswith("_residential")]
    masks = np.stack([h.encode(read_raster(it.label)[0][:224, :224]).numpy() for it in items])
    p = gt_proportions(masks, h)
    got = loo_oracle(p, [it.scene for it in items], ProportionLayout.from_hierarchy(h), (10,), -1)
    assert len(items) == 82 and got["P@10"] == pytest.approx(0.685, abs=0.001)
