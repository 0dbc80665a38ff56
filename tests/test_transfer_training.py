"""The Table X variants through the training loop (hierars.training.fit): run, aggregate, resume, reload."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hierars import Hierarchy, build_model
from hierars.training import TrainConfig
from hierars.training.transfer import (
    VARIANTS,
    build_transfer_variant,
    load_transfer_model,
    run_transfer_table,
)
from hierars.transfer import TransferError, TransLU


def _dataset(tree: Hierarchy, n: int, bands: int, size: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        leaf = torch.randint(0, tree.num_classes[-1], (size, size), generator=g)
        out.append({"image": torch.randn(bands, size, size, generator=g), "mask": tree.lift_all(leaf), "meta": {}})
    return out


def test_table_x_variants_train_aggregate_resume_and_reload(tmp_path):
    src_tree, tgt_tree = Hierarchy.builtin("mm5b"), Hierarchy.builtin("crop10m")
    torch.manual_seed(0)
    source = build_model("fpn", "tu-convnext_atto", 4, src_tree, decoder_channels=32).eval()
    cfg = TrainConfig(arch="fpn", encoder="tu-convnext_atto", decoder_channels=32, iterations=2, batch_size=2,
                      augment=False, progress=False, seeds=[0], num_threads=1)
    train_ds, val_ds = _dataset(tgt_tree, 4, 4, 64, 0), _dataset(tgt_tree, 2, 4, 64, 1)
    kw = {"models_dir": tmp_path / "models", "reports_dir": tmp_path / "reports"}
    res = run_transfer_table("crop", source, tgt_tree, "mm5b_to_crop10m", cfg, train_ds, val_ds, **kw)
    assert list(res) == list(VARIANTS)
    for v in VARIANTS:
        saved = json.loads((tmp_path / "reports" / "metrics" / f"transfer_crop_{v}.json").read_text())
        assert "mIoU_L3_jsps" in saved and saved["n_seeds"] == 1.0
    # a finished run is not retrained: the stored metrics come back
    again = run_transfer_table("crop", source, tgt_tree, "mm5b_to_crop10m", cfg, train_ds, val_ds,
                               variants=["translu"], **kw)
    assert again["translu"]["per_seed"] == res["translu"]["per_seed"]
    # resume checkpoints live outside the stage's DVC output, so deleting it (as dvc repro does) loses nothing
    assert (tmp_path / "models" / ".resume" / "transfer_crop" / "translu").is_dir()
    assert not (tmp_path / "models" / "transfer_crop" / ".resume").exists()
    shutil.rmtree(tmp_path / "models" / "transfer_crop")
    after_delete = run_transfer_table("crop", source, tgt_tree, "mm5b_to_crop10m", cfg, train_ds, val_ds,
                                      variants=["translu"], **kw)
    assert after_delete["translu"]["per_seed"] == res["translu"]["per_seed"]
    model = load_transfer_model(res["translu"]["ckpts"][0], "translu", source, tgt_tree, "mm5b_to_crop10m", 4)
    assert isinstance(model, TransLU) and model.cdks is not None and model.gate is not None
    with pytest.raises(TransferError, match="every Table X variant must share the architecture"):
        build_transfer_variant("finetune", source, tgt_tree, "mm5b_to_crop10m", cfg.model_copy(update={"arch": "upernet"}), 4)
