"""TransLU: frozen Branch 2, Branch-1 initialisation, CDKS placement, CDSA gating, hybrid targets, expansion,
and the errors for bad mappings, mismatched source models and band counts."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from hierars import Hierarchy, build_model
from hierars.losses import path_kl
from hierars.transfer import (
    CrossDomainMapping,
    TransferError,
    TransLU,
    TransLULoss,
    expand_categories,
    expansion_mapping,
    finetune_model,
    hybrid_targets,
    interaction_points,
    load_source_model,
)


@pytest.fixture(scope="module")
def mm5b() -> Hierarchy:
    return Hierarchy.builtin("mm5b")


@pytest.fixture(scope="module")
def crop10m() -> Hierarchy:
    return Hierarchy.builtin("crop10m")


def _source(tree: Hierarchy, encoder: str = "tu-convnext_atto", bands: int = 4, arch: str = "fpn") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, encoder, bands, tree, decoder_channels=32).eval()


def _labels(tree: Hierarchy, b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return tree.lift_all(torch.randint(0, tree.num_classes[-1], (b, size, size), generator=g)).permute(1, 0, 2, 3)


# ------------------------------------------------------------------------------------------ Branch 2 frozen
def test_branch2_gets_no_grad_and_is_bitwise_unchanged_incl_bn_buffers(mm5b, crop10m):
    src = _source(mm5b, "tu-resnet18", bands=4)
    before = {k: v.clone() for k, v in src.state_dict().items()}
    assert any("running_mean" in k for k in before) and any("num_batches_tracked" in k for k in before)
    model = TransLU(src, crop10m, "mm5b_to_crop10m").train()
    assert not model.source.training and model.branch1.training
    assert all(not p.requires_grad for p in model.source.parameters())
    # every parameter handed to the optimiser, with weight decay: frozen ones must still not move
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    loss_fn = TransLULoss(model)
    x, y = torch.randn(2, 4, 64, 64), _labels(crop10m, 2, 64)
    b1_before = copy.deepcopy(model.branch1.state_dict())
    for _ in range(2):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.source.parameters())
        opt.step()
    after = model.source.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    # the test can fail: Branch 1's BN statistics and weights did move
    moved = [k for k, v in model.branch1.state_dict().items() if not torch.equal(v, b1_before[k])]
    assert any("running_mean" in k for k in moved) and any(k.endswith("weight") for k in moved)


# ------------------------------------------------------------------------------------------ CDKS
@pytest.mark.parametrize("encoder", ["tu-convnext_atto", "tu-resnet18", "tu-mambaout_femto", "tu-pvt_v2_b0"])
def test_branch1_encoder_features_equal_branch2_at_init(mm5b, crop10m, encoder):
    """γ = 0 and merge (w1, w2) = (0.5, 0.5): F1_next = 0.5·F̃1 + 0.5·F2 = F2 exactly, so in eval mode Branch 1's
    encoder features equal Branch 2's bit for bit (ResNet's BN uses the shared running statistics).
    Covers block-wise NCHW (ConvNeXt), stage-wise (ResNet), block-wise channels-last (MambaOut) and token
    blocks that fall back to stage-wise units (PVT-v2)."""
    src = _source(mm5b, encoder)
    x = torch.randn(2, 4, 64, 64)

    def features(model: TransLU) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model.eval()
        with torch.no_grad():
            with model.cdks.record():
                f2 = model.source.encoder(x)
            with model.cdks.inject():
                f1 = model.branch1.encoder(x)
            model.cdks.clear()
        return f1, f2

    model = TransLU(src, crop10m, "mm5b_to_crop10m")
    kinds = {"tu-convnext_atto": {"block"}, "tu-resnet18": {"stage"}, "tu-mambaout_femto": {"block"},
             "tu-pvt_v2_b0": {"stage"}}[encoder]
    assert {p.kind for p in model.cdks.points} == kinds
    assert model.cdks.channels_last == (encoder == "tu-mambaout_femto")
    f1, f2 = features(model)
    assert len(f1) == len(f2)
    for a, b in zip(f1, f2):
        assert torch.equal(a, b)
    # PIIP's (1, 1) merge doubles the stream instead: the relation is specific to (0.5, 0.5)
    g1, g2 = features(TransLU(src, crop10m, "mm5b_to_crop10m", merge_init=(1.0, 1.0)))
    assert not torch.equal(g1[-1], g2[-1])


def test_interaction_points_per_encoder_family():
    with torch.device("meta"):
        convnext_b = timm.create_model("convnext_base", features_only=True)
        resnet = timm.create_model("resnet18", features_only=True)
        swin = timm.create_model("swin_tiny_patch4_window7_224", features_only=True)
        vit = timm.create_model("vit_tiny_patch16_224", features_only=True)
    pts = interaction_points(convnext_b)  # depths 3, 3, 27, 3, a unit every 3 blocks
    assert len(pts) == 12 and all(p.kind == "block" for p in pts)
    assert [p.name for p in pts][:3] == ["stages_0.blocks.2", "stages_1.blocks.2", "stages_2.blocks.2"]
    assert [p.name for p in interaction_points(resnet)] == ["layer1", "layer2", "layer3", "layer4"]
    assert len(interaction_points(swin)) == 12  # every block (depths 2, 2, 6, 2)
    assert len(interaction_points(convnext_b, every="stage")) == 4
    with pytest.raises(TransferError, match="cannot reach the blocks"):
        interaction_points(vit)


def test_non_timm_encoder_is_refused(mm5b, crop10m):
    src = build_model("fpn", "resnet18", 3, mm5b, decoder_channels=32).eval()  # smp's own ResNet encoder
    with pytest.raises(TransferError, match="cannot reach the blocks"):
        TransLU(src, crop10m, "mm5b_to_crop10m")
    TransLU(src, crop10m, "mm5b_to_crop10m", cdks=False)  # CDSA alone needs no encoder blocks


# ------------------------------------------------------------------------------------------ CDSA
def test_cdsa_masks_sum_rule_and_complement(mm5b, crop10m):
    spec = {"gates": [
        {"target_level": 1, "source_level": 1, "nodes": {"vegetation": ["vegetation", "water"], "other": "complement"}},
        {"target_level": 2, "source_level": 2, "nodes": {"cropland": "cropland", "other": "complement"}},
    ]}
    mapping = CrossDomainMapping.from_dict(spec).validate(mm5b, crop10m)
    model = TransLU(_source(mm5b), crop10m, mapping, cdks=False)
    g = torch.Generator().manual_seed(0)
    src = [torch.randn(2, n, 5, 6, generator=g) for n in mm5b.num_classes]
    masks = model.gate.masks(src)
    p1, p2 = src[0].softmax(1), src[1].softmax(1)
    veg, water = mm5b.names[0].index("vegetation"), mm5b.names[0].index("water")
    crop = mm5b.names[1].index("cropland")
    torch.testing.assert_close(masks[0][:, 0], p1[:, veg] + p1[:, water])
    torch.testing.assert_close(masks[0][:, 1], 1 - p1[:, veg] - p1[:, water])
    torch.testing.assert_close(masks[1][:, 0], p2[:, crop])
    for m in masks.values():
        torch.testing.assert_close(m.sum(1), torch.ones(2, 5, 6))
    assert 2 not in masks  # the new crop level is not gated
    # gating is applied to the level logits before the fusion (Eq. 15)
    feats = [torch.randn(2, n, 5, 6, generator=g) for n in crop10m.num_classes]
    gated = model.gate(feats, src)
    torch.testing.assert_close(gated[0], feats[0] * masks[0])
    assert torch.equal(gated[2], feats[2])


# ------------------------------------------------------------------------------------------ hybrid targets
def test_hybrid_targets_gt_ancestors_win_and_invalid_paths_leave_path_loss(mm5b, crop10m):
    mapping = CrossDomainMapping.builtin("mm5b_to_crop10m").validate(mm5b, crop10m)
    n = {name: i for i, name in enumerate(crop10m.names[-1])}
    leaf = torch.tensor([[[n["rice"], n["other"], n["other"], n["other"], 255]]])  # 1×1×5
    mask = crop10m.lift_all(leaf).permute(1, 0, 2, 3)  # 1×3×1×5
    s = {name: i for i, name in enumerate(mm5b.names[-1])}
    src_leaf = torch.tensor([[[s["lake"], s["forest"], s["paddy_field"], s["road"], s["forest"]]]])
    src_pred = mm5b.lift_all(src_leaf).permute(1, 0, 2, 3)
    hyb = hybrid_targets(mask, src_pred, mapping, mm5b, crop10m)
    names = [[crop10m.names[lvl][int(c)] if c != 255 else None for c in hyb[0, lvl, 0]] for lvl in range(3)]
    assert names[0] == ["vegetation", "vegetation", "vegetation", "other", None]  # rice keeps GT ancestors
    assert names[1] == ["cropland", "other", "cropland", "other", None]
    assert names[2] == ["rice", "other", "other", "other", None]  # finest level: ground truth
    pid = crop10m.path_id(hyb)[0, 0]
    assert pid[0] >= 0 and pid[3] >= 0 and pid[1] < 0 and pid[2] < 0  # (veg, other, other), (veg, crop, other)

    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(1, k, 1, 5, generator=g) for k in crop10m.num_classes]
    base = path_kl(logits, hyb, crop10m)
    for px, changes in ((1, False), (2, False), (0, True)):
        bumped = [z.clone() for z in logits]
        bumped[2][0, :, 0, px] += torch.tensor([3.0, -1.0, 0.5, 2.0])
        assert (not torch.equal(path_kl(bumped, hyb, crop10m), base)) == changes, px


def test_translu_loss_reads_branch2_of_the_same_forward(mm5b, crop10m):
    model = TransLU(_source(mm5b), crop10m, "mm5b_to_crop10m")
    loss_fn = TransLULoss(model, mu=1.0)
    with pytest.raises(RuntimeError, match="call model"):
        loss_fn([torch.zeros(1, k, 8, 8) for k in crop10m.num_classes], _labels(crop10m, 1, 8))
    out = model(torch.randn(2, 4, 32, 32))
    assert [tuple(z.shape) for z in out] == [(2, k, 32, 32) for k in crop10m.num_classes]
    assert [tuple(z.shape) for z in model.source_logits] == [(2, k, 32, 32) for k in mm5b.num_classes]
    loss = loss_fn(out, _labels(crop10m, 2, 32))
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.branch1.parameters())


# ------------------------------------------------------------------------------------------ expansion
def test_expansion_keeps_source_paths_adds_new_ones_and_runs_on_the_band_count():
    lclu = Hierarchy.builtin("agnet_lclu")
    crops = ["corn", "soybean", "spring_wheat", "other_crop"]
    values = {"corn": 1, "soybean": 5, "spring_wheat": 23,
              "other_crop": Hierarchy.builtin("agnet_crop").leaf_raw_values["other_crop"]}
    model = expand_categories(_source(lclu, bands=7), "cropland", crops, label_values=values)
    tgt = model.hierarchy
    assert tgt == Hierarchy.builtin("agnet_crop")
    src_paths = {tuple(lclu.names[lvl][int(c)] for lvl, c in enumerate(p)) for p in lclu.paths}
    tgt_paths = {tuple(tgt.names[lvl][int(c)] for lvl, c in enumerate(p)) for p in tgt.paths}
    assert {p[:-1] for p in tgt_paths} == src_paths  # every source path kept, nothing else
    assert {p for p in tgt_paths if p[1] == "cropland"} == {("vegetation", "cropland", c) for c in crops}
    assert len(tgt_paths) == len(src_paths) - 1 + len(crops)
    assert model.mapping.to_dict()["gates"] == CrossDomainMapping.builtin("agnet_lclu_to_agnet_crop").to_dict()["gates"]
    out = model.eval()(torch.randn(1, 7, 64, 64))
    assert [z.shape[1] for z in out] == [3, 6, 9]
    with pytest.raises(TransferError, match="bands"):
        model(torch.randn(1, 10, 32, 32))
    assert expansion_mapping(lclu, tgt, "cropland").gates[-1].nodes["corn"] == ["cropland"]


# ------------------------------------------------------------------------------------------ errors
def test_mapping_naming_an_unknown_node_names_file_and_node(tmp_path, mm5b, crop10m):
    good = CrossDomainMapping.builtin("mm5b_to_crop10m").to_dict()
    import yaml

    bad_target = copy.deepcopy(good)
    bad_target["gates"][0]["nodes"]["woodland"] = ["vegetation"]
    p = tmp_path / "bad_target.yaml"
    p.write_text(yaml.safe_dump(bad_target))
    with pytest.raises(TransferError, match=r"bad_target\.yaml.*target node 'woodland'"):
        TransLU(_source(mm5b), crop10m, p)
    bad_source = copy.deepcopy(good)
    bad_source["gates"][1]["nodes"]["cropland"] = ["cropland", "orchard"]
    p = tmp_path / "bad_source.yaml"
    p.write_text(yaml.safe_dump(bad_source))
    with pytest.raises(TransferError, match=r"bad_source\.yaml.*source node 'orchard'"):
        CrossDomainMapping.from_yaml(p).validate(mm5b, crop10m)


def test_source_checkpoint_with_other_tree_or_architecture_is_refused(tmp_path, mm5b, crop10m):
    src = _source(mm5b, bands=4)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": src.state_dict(), "hierarchy": {"name": "mm5b", "num_classes": list(mm5b.num_classes)},
                "config": {"arch": "fpn", "encoder": "tu-convnext_atto", "head": "bhccm", "fusion": "bidirectional",
                           "decoder_channels": 32}}, ckpt)
    loaded = load_source_model(ckpt, "fpn", "tu-convnext_atto", 4, mm5b, decoder_channels=32)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(TransferError, match=r"ckpt\.pt.*arch='fpn', not 'upernet'"):
        load_source_model(ckpt, "upernet", "tu-convnext_atto", 4, mm5b, decoder_channels=32)
    with pytest.raises(TransferError, match=r"ckpt\.pt.*tree is 'mm5b'"):
        load_source_model(ckpt, "fpn", "tu-convnext_atto", 4, crop10m, decoder_channels=32)
    bare = tmp_path / "bare.pt"
    torch.save(src.state_dict(), bare)  # no stored settings: the tensors must fit
    with pytest.raises(TransferError, match=r"bare\.pt.*takes 4 bands, not 7"):
        load_source_model(bare, "fpn", "tu-convnext_atto", 7, mm5b, decoder_channels=32)
    with pytest.raises(TransferError, match=r"bare\.pt.*does not fit"):
        load_source_model(bare, "fpn", "tu-resnet18", 4, mm5b, decoder_channels=32)
    # a model object whose tree or architecture differs from the one given
    with pytest.raises(TransferError, match="built for tree 'mm5b'"):
        TransLU(src, crop10m, "mm5b_to_crop10m", source_hierarchy=Hierarchy.builtin("gid15"))
    with pytest.raises(TransferError, match="'fpn' model, not 'upernet'"):
        TransLU(src, crop10m, "mm5b_to_crop10m", arch="upernet")


def test_target_band_count_must_match_the_source(mm5b, crop10m):
    src = _source(mm5b, bands=10)
    with pytest.raises(TransferError, match="target data has 3 bands but the source model"):
        TransLU(src, crop10m, "mm5b_to_crop10m", in_channels=3)
    model = TransLU(src, crop10m, "mm5b_to_crop10m", cdks=False, in_channels=10)
    with pytest.raises(TransferError, match="3 bands"):
        model(torch.randn(1, 3, 32, 32))


def test_finetune_baseline_is_branch1_alone(mm5b, crop10m):
    src = _source(mm5b)
    ft = finetune_model(src, crop10m)
    enc_src, enc_ft = src.encoder.state_dict(), ft.encoder.state_dict()
    assert all(torch.equal(v, enc_ft[k]) for k, v in enc_src.items())
    assert ft.segmentation_head.head.num_classes == crop10m.num_classes
    assert not torch.equal(next(iter(ft.decoder.parameters())), next(iter(src.decoder.parameters())))
    assert all(p.requires_grad for p in src.parameters())  # the source model is not frozen by this


def test_source_model_carries_no_hooks_and_wrapper_can_be_copied(mm5b, crop10m):
    src = _source(mm5b)
    model = TransLU(src, crop10m, "mm5b_to_crop10m").eval()
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert not any(m._forward_hooks for m in src.modules())  # hooks live only during Branch 2's pass
    clone = copy.deepcopy(model)
    with torch.no_grad():
        out2 = clone(x)
    for a, b in zip(out, out2):
        assert torch.equal(a, b)
    assert not any(m._forward_hooks for m in clone.source.modules())
