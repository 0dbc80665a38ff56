"""Bad input gets one clear error that names the file, key or node (issue 13): params keys, checkpoints, NaN / inf
batches and losses, tree YAMLs, full disks and permission errors. One test each."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from hierars import Hierarchy, atomic
from hierars.heads import BHCCM
from hierars.hierarchy import HierarchyError
from hierars.losses import HSCLoss
from hierars.project import load_params, stage_paths
from hierars.training import TrainConfig, fit, load_run_model, resolve_run, save_checkpoint
from hierars.validation import SettingsError


@pytest.fixture(scope="module")
def tree(trees_dir: Path) -> Hierarchy:
    return Hierarchy.from_yaml(trees_dir / "gid15.yaml")


class Tiles(Dataset):
    """6 samples (P×16×16 noisy one-hot images of random leaves); ``bad`` = {index: value} puts that value
    (NaN / inf) into one pixel of a sample's image. ``meta`` names a file per sample, as GeoTiffDataset does."""

    def __init__(self, h: Hierarchy, bad: dict[int, float] | None = None, channels: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        p = h.num_classes[-1]
        leaves = torch.randint(0, p, (6, 16, 16), generator=g)
        self.masks = torch.stack([torch.stack([h.lift(x, lvl) for lvl in range(h.num_levels)]) for x in leaves])
        self.images = nn.functional.one_hot(leaves, p).permute(0, 3, 1, 2).float()[:, : channels or p]
        for i, value in (bad or {}).items():
            self.images[i, 2, 5, 5] = value

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i],
                "meta": {"path": f"/data/scene_{i}.tif", "window": torch.tensor([0, 16 * i, 16, 16])}}


def _model(h: Hierarchy, channels: int | None = None) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels or h.num_classes[-1], 8, 3, padding=1), BHCCM(8, h.num_classes))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"iterations": 4, "batch_size": 6, "progress": False, "jsps": False, "augment": False, **kw})


# ----------------------------------------------------------------------------------------------- params.yaml
def test_params_typo_names_the_dotted_key_and_suggests_the_closest() -> None:
    with pytest.raises(SettingsError, match=r"train\.runs\.flat\.batchsize: unknown key \(did you mean 'batch_size'"):
        resolve_run({"runs": {"flat": {"head": "flat", "loss": "ce", "batchsize": 4}}}, "flat")
    with pytest.raises(SettingsError, match=r"train\.itrations: unknown key \(did you mean 'iterations'"):
        resolve_run({"itrations": 10, "runs": {"flat": {}}}, "flat")
    with pytest.raises(ValueError, match=r"run 'flt' is not in params 'train.runs' \(did you mean 'flat'"):
        resolve_run({"runs": {"flat": {}}}, "flt")


def test_params_out_of_range_and_mistyped_values() -> None:
    with pytest.raises(SettingsError, match=r"train\.lr: must be > 0") as err:
        resolve_run({"lr": -0.1, "iterations": "many", "runs": {}})
    assert "train.iterations: input should be a valid integer" in str(err.value)  # every problem, one line each
    with pytest.raises(SettingsError, match=r"train\.runs\.x\.head: must be one of .* did you mean 'bhccm'"):
        resolve_run({"runs": {"x": {"head": "bhcm"}}}, "x")
    with pytest.raises(SettingsError, match=r"train\.runs\.x: a flat head predicts the finest level only"):
        resolve_run({"runs": {"x": {"head": "flat", "loss": "hsc"}}}, "x")


def test_params_unknown_section_and_paths_key(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("seed: 0\ntrian:\n  lr: 0.1\n")
    with pytest.raises(SettingsError, match=rf"{f}: trian: unknown key \(did you mean 'train'"):
        load_params(f)
    with pytest.raises(SettingsError, match=r"paths\.model: unknown key \(did you mean 'models'"):
        stage_paths({"paths": {"model": "elsewhere"}})
    with pytest.raises(SettingsError, match=r"train: expected a mapping of settings, got int 5"):
        resolve_run(5, "flat")  # type: ignore[arg-type]


def test_prepare_section_names_nested_keys() -> None:
    from hierars.data import PrepareConfig

    with pytest.raises(SettingsError, match=r"prepare\.synthetic\.n_scene: unknown key \(did you mean 'n_scenes'"):
        PrepareConfig.from_params({"prepare": {"synthetic": {"n_scene": 4}}})


# ----------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cut", [0, 0.5, 0.99])
def test_truncated_or_empty_checkpoint_on_resume(tree: Hierarchy, tmp_path: Path, cut: float) -> None:
    fit(_model(tree), HSCLoss(tree), Tiles(tree), None, tree, _cfg(iterations=2), tmp_path)
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "ckpt.pt").write_bytes(data[: int(len(data) * cut)])  # what a crash mid-copy would leave
    with pytest.raises(ValueError, match=rf"{tmp_path / 'ckpt.pt'} is not a readable checkpoint"):
        fit(_model(tree), HSCLoss(tree), Tiles(tree), None, tree, _cfg(iterations=2), tmp_path)


def test_resume_from_another_tree_or_architecture(tree: Hierarchy, tmp_path: Path, trees_dir: Path) -> None:
    fit(_model(tree), HSCLoss(tree), Tiles(tree), None, tree, _cfg(iterations=2), tmp_path)
    other = Hierarchy.from_yaml(trees_dir / "mm5b.yaml")
    with pytest.raises(ValueError, match=r"ckpt.pt was trained for tree 'gid15' with classes \(3, 5, 15\).*"
                                         r"tree 'mm5b' with \(4, 9, 18\)"):
        fit(_model(other), HSCLoss(other), Tiles(other), None, other, _cfg(iterations=2), tmp_path)
    with pytest.raises(ValueError, match=r"cannot resume from .*ckpt.pt.*arch: 'fpn' -> 'unet'"):
        fit(_model(tree), HSCLoss(tree), Tiles(tree), None, tree, _cfg(iterations=2, arch="unet"), tmp_path)
    with pytest.raises(ValueError, match=r"ckpt.pt: its model state does not fit this run's model"):
        fit(_model(tree, 9), HSCLoss(tree), Tiles(tree, channels=9), None, tree, _cfg(iterations=2), tmp_path)


def test_load_run_from_another_tree_or_band_count(tree: Hierarchy, tmp_path: Path, trees_dir: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    cfg = TrainConfig(arch="fpn", encoder="resnet18", decoder_channels=32, head="flat", loss="ce")
    from hierars.training import build_run_model

    save_checkpoint(ckpt, {"model": build_run_model(cfg, tree, 3).state_dict(), "iteration": 1,
                           "config": cfg.model_dump(), "hierarchy": {"name": "gid15", "num_classes": [3, 5, 15]}})
    other = Hierarchy.from_yaml(trees_dir / "mm5b.yaml")
    with pytest.raises(ValueError, match=rf"{ckpt} was trained for tree 'gid15'.*'mm5b'"):
        load_run_model(ckpt, other, 3)
    with pytest.raises(ValueError, match=rf"{ckpt}: its model state does not fit"):
        load_run_model(ckpt, tree, 4)


# ----------------------------------------------------------------------------------------------- NaN / inf
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_an_input_batch_names_the_files(tree: Hierarchy, tmp_path: Path, value: float) -> None:
    with pytest.raises(FloatingPointError, match=r"NaN / inf in the input batch at iteration 0 \(seed 0\), band\(s\) "
                                                 r"\[3\].*/data/scene_4.tif \[rows 0:16, cols 64:80\]") as err:
        fit(_model(tree), HSCLoss(tree), Tiles(tree, bad={4: value}), None, tree, _cfg(), tmp_path)
    assert "scene_3" not in str(err.value)  # only the bad sample is named


def test_nan_loss_names_the_iteration_and_the_batch_files(tree: Hierarchy, tmp_path: Path) -> None:
    calls = []

    def loss(logits: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        out = HSCLoss(tree)(logits, mask)
        return out * float("nan") if len(calls) == 3 else out

    with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at iteration 2 .*batch's files: "
                                                 r"/data/scene_\d.tif"):
        fit(_model(tree), loss, Tiles(tree), None, tree, _cfg(), tmp_path)


# ----------------------------------------------------------------------------------------------- tree YAML
@pytest.mark.parametrize("text, message", [
    ("tree:\n  a: &x\n    b: *x\n", r"cycle: node 'b' \(line 3\) contains itself"),
    ("tree:\n  land:\n    crop: [rice]\n  water:\n    crop: [lake]\n", r"duplicate name 'crop' at level 2"),
    ("tree:\n  land:\n    crop:\n  water:\n    lake: [lake]\n", r"node 'crop' has no children.*level 3 would be empty"),
    ("tree:\n  land: {}\n", r"node 'land' has no children: level 2 would be empty"),
    ("tree:\n  land: []\n", r"node 'land' has an empty list of leaves \(level 2 would be empty"),
    ("tree: {}\n", r"non-empty mapping of root classes"),
])
def test_tree_yaml_cycles_duplicates_empty_levels(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "tree.yaml"
    p.write_text(text)
    with pytest.raises(HierarchyError, match=message) as err:
        Hierarchy.from_yaml(p)
    assert str(p) in str(err.value)


def test_tree_given_as_a_cyclic_mapping() -> None:
    tree: dict = {"land": {"crop": ["rice"]}}
    tree["land"]["loop"] = tree
    with pytest.raises(HierarchyError, match=r"cycle: node 'loop' contains one of its own ancestors"):
        Hierarchy(tree)


# ----------------------------------------------------------------------------------------------- disks
@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 64 KiB tmpfs (needs mount rights: skipped without them)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                   capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_full_disk_on_a_real_tiny_tmpfs(tiny_disk: Path) -> None:
    (tiny_disk / "metrics.json").write_text("{}\n")
    with pytest.raises(OSError, match=rf"cannot write {tiny_disk / 'ckpt.pt'}: No space left on device \(the disk "
                                      r"is full") as err:
        save_checkpoint(tiny_disk / "ckpt.pt", {"model": {"w": torch.zeros(100_000)}, "iteration": 1, "config": {}})
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["metrics.json"]  # no temporary left behind


def test_full_disk_while_writing_a_figure_or_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'm.json'}: No space left on device"):
        atomic.atomic_write_json(tmp_path / "m.json", {"a": 1})

    class Figure:  # what atomic_savefig needs of a matplotlib figure
        def savefig(self, path: Path, **kw) -> None:
            Path(path).write_bytes(b"half a png")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'curve.png'}: No space left"):
        atomic.atomic_savefig(Figure(), tmp_path / "curve.png")
    assert list(tmp_path.iterdir()) == []  # neither a final file nor a temporary


def test_permission_error_names_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*a, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / ".tmpXYZ"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=rf"cannot write {tmp_path / 'ckpt.pt'}: Permission denied \(permission"):
        save_checkpoint(tmp_path / "ckpt.pt", {"model": {}, "iteration": 0, "config": {}})


def test_unwritable_folder_as_a_normal_user(tmp_path: Path) -> None:
    """A read-only folder (real permissions: skipped as root, who may write anyway)."""
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match=rf"cannot write {ro / 'x.npy'}"):
        atomic.atomic_write_bytes(ro / "x.npy", np.zeros(3).tobytes())
