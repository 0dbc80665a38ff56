"""build_model: smp architectures × timm encoders × band counts, head swap, local pretrained weights."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import adapt_input_conv

from hierars.heads import BHCCM, FlatHead
from hierars.hierarchy import Hierarchy
from hierars.models import HierarchicalSegmentationHead, build_model

MM5B = Hierarchy.builtin("mm5b")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to fetch weights fails the test."""
    import timm.models._builder as builder

    def refuse(*args, **kwargs):
        raise AssertionError("build_model tried to download weights")

    for name in (
        "load_state_dict_from_url",
        "load_state_dict_from_hf",
        "download_cached_file",
        "load_custom_from_hf",
    ):
        if hasattr(builder, name):
            monkeypatch.setattr(builder, name, refuse)


def _forward(model, bands, size=64):
    with torch.no_grad():
        return model(torch.randn(2, bands, size, size))


def _check_outputs(out, size=64, levels=MM5B.num_classes):
    assert isinstance(out, list) and len(out) == len(levels)
    assert [tuple(o.shape) for o in out] == [(2, n, size, size) for n in levels]


@pytest.mark.parametrize("arch", ["upernet", "deeplabv3plus", "fpn", "segformer"])
def test_architectures_return_level_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch, "tu-resnet18", 4, MM5B, head="bhccm")
    assert isinstance(model.segmentation_head, HierarchicalSegmentationHead)
    assert isinstance(model.segmentation_head.head, BHCCM)
    assert model.segmentation_head.head.in_channels == model.decoder_out_channels
    _check_outputs(_forward(model, 4))


@pytest.mark.parametrize("in_channels", [3, 7, 10])
def test_band_counts(in_channels):
    model = build_model(
        "upernet", "tu-convnext_atto", in_channels, MM5B, head="independent", decoder_channels=32
    )
    _check_outputs(_forward(model, in_channels))


def test_flat_head_and_decoder_channels_and_resolution():
    flat = build_model("fpn", "tu-resnet18", 3, MM5B, head="flat", decoder_channels=32)
    assert flat.decoder_out_channels == 32 and flat.num_levels_out == 1
    assert isinstance(flat.segmentation_head.head, FlatHead)
    _check_outputs(_forward(flat, 3), levels=MM5B.num_classes[-1:])
    low = build_model(
        "upernet", "tu-resnet18", 3, MM5B, head="hssn", decoder_channels=48, upsample_logits=False
    )
    assert low.decoder_out_channels == 48
    _check_outputs(_forward(low, 3), size=16)


@pytest.mark.parametrize("head", ["flat", "bhccm", "hssn"])
def test_replaced_head_is_initialised_like_smp_head(head):
    """The swapped-in head gets smp's head init (xavier-uniform weights, zero biases), like smp's own head."""
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(64, 18, 1)
    torch.nn.init.xavier_uniform_(ref.weight)
    model = build_model("fpn", "tu-resnet18", 3, MM5B, head=head, decoder_channels=64)
    convs = [m for m in model.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    for conv in convs:
        assert conv.bias is None or torch.all(conv.bias == 0)
        fan_in, fan_out = conv.weight.shape[1] * conv.weight[0, 0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert conv.weight.abs().max() <= bound
        if conv.weight.numel() >= 500:  # a uniform(-b, b) sample reaches close to b (PyTorch's default: 1/sqrt(fan_in))
            assert conv.weight.abs().max() > 0.9 * bound


def test_bhccm_overhead_inside_a_full_model():
    """Swapping the flat head for BHCCM adds exactly the head overhead (13C + 1711 for C = decoder width)."""
    flat = build_model("upernet", "tu-resnet18", 3, MM5B, head="flat", decoder_channels=64)
    bh = build_model("upernet", "tu-resnet18", 3, MM5B, head="bhccm", decoder_channels=64)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(bh) - count(flat) == 13 * 64 + 1711


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_local_timm_checkpoint_adapted_to_bands(tmp_path, name):
    """A 3-band timm classification checkpoint loads into a 5-band encoder (first conv adapted by timm)."""
    torch.manual_seed(0)
    source = timm.create_model(name, pretrained=False).state_dict()
    ckpt = tmp_path / f"{name}.pth"
    torch.save({"state_dict": source}, ckpt)
    model = build_model("fpn", f"tu-{name}", 5, MM5B, head="bhccm", decoder_channels=32, pretrained=ckpt)
    enc = model.encoder.model.state_dict()
    # features_only models rename sequential children (convnext: stem.0 -> stem_0, stages.2 -> stages_2)
    first, deep = {
        "resnet18": ("conv1", "layer3.0.conv2"),
        "convnext_atto": ("stem.0", "stages.2.blocks.0.conv_dw"),
    }[name]
    key = lambda k: k if k in enc else k.replace("stem.", "stem_").replace("stages.", "stages_")  # noqa: E731
    torch.testing.assert_close(enc[key(first + ".weight")], adapt_input_conv(5, source[first + ".weight"]))
    torch.testing.assert_close(enc[key(deep + ".weight")], source[deep + ".weight"])
    _check_outputs(_forward(model, 5))


def test_local_encoder_state_dict_reloaded(tmp_path):
    first = build_model("upernet", "tu-convnext_atto", 4, MM5B, head="flat")
    ckpt = tmp_path / "encoder.pt"
    torch.save({f"encoder.{k}": v for k, v in first.encoder.state_dict().items()}, ckpt)
    second = build_model("upernet", "tu-convnext_atto", 7, MM5B, head="bhccm", pretrained=ckpt)
    a, b = first.encoder.state_dict(), second.encoder.state_dict()
    stem = "model.stem_0.weight"
    assert b[stem].shape[1] == 7
    torch.testing.assert_close(b[stem], adapt_input_conv(7, a[stem], base_chans=4))
    assert all(torch.equal(a[k], b[k]) for k in a if k != stem)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="head must be"):
        build_model("fpn", "tu-resnet18", 3, MM5B, head="mlp")
    with pytest.raises(ValueError, match="architecture"):
        build_model("nonet", "tu-resnet18", 3, MM5B)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model("fpn", "tu-resnet18", 3, MM5B, pretrained=tmp_path / "missing.pth")
