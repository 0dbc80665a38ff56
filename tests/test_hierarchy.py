"""Hierarchy: the shipped trees, validation errors, lift/encode/path_id/extend, property tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierars import Hierarchy, HierarchyError


def _mm5b(trees_dir):
    return Hierarchy.from_yaml(trees_dir / "mm5b.yaml")


def test_mm5b_tree(trees_dir):
    h = _mm5b(trees_dir)
    assert h.num_classes == (4, 9, 18)
    assert h.num_levels == 3
    assert h.paths.shape == (18, 3)
    assert h.paths.dtype == torch.long
    # row i is the path of leaf i, and each row follows the parent links
    assert torch.equal(h.paths[:, 2], torch.arange(18))
    for lvl in (1, 2):
        assert torch.equal(h.parents[lvl][h.paths[:, lvl]], h.paths[:, lvl - 1])
    assert (h.parents[0] == -1).all()
    assert h.names[0] == ["vegetation", "water", "artificial_surface", "bare_land"]
    assert h.names[2][h.paths[h.names[2].index("airport"), 2]] == "airport"
    assert h.names[1][h.paths[h.names[2].index("airport"), 1]] == "transportation"


def test_all_shipped_trees_load(trees_dir):
    expected = {
        "mm5b": (4, 9, 18), "gid15": (3, 5, 15), "crop10m": (2, 2, 4),
        "whdld": (4, 6), "agnet_lclu": (3, 6), "agnet_crop": (3, 6, 9),
    }
    for name, n in expected.items():
        h = Hierarchy.from_yaml(trees_dir / f"{name}.yaml")
        assert h.num_classes == n, name
        assert len(h.paths) == n[-1]
        assert h.name == name
        assert set(h.leaf_raw_values) == set(h.names[-1]), f"{name}: every leaf has raw values"


def test_agnet_crop_is_extension_of_lclu(trees_dir):
    lclu = Hierarchy.from_yaml(trees_dir / "agnet_lclu.yaml")
    crop = Hierarchy.from_yaml(trees_dir / "agnet_crop.yaml")
    ext = lclu.extend(
        "cropland", ["corn", "soybean", "spring_wheat", "other_crop"],
        label_values={k: crop.leaf_raw_values[k] for k in ("corn", "soybean", "spring_wheat", "other_crop")},
    )
    assert ext == crop
    # a raw CDL code encodes consistently in both trees at the shared levels
    raw = np.array([[1, 5, 23, 42], [176, 111, 121, 0]])
    a, b = lclu.encode(raw), crop.encode(raw)
    assert torch.equal(a, b[:2])
    assert b[2, 0, 0] == crop.names[2].index("corn")
    assert b[2, 0, 3] == crop.names[2].index("other_crop")
    assert (a[:, 1, 3] == 255).all()


def test_lift_and_ignore(trees_dir):
    h = _mm5b(trees_dir)
    fine = torch.tensor([[0, 17, 255], [13, 6, 9]])
    l1 = h.lift(fine, 0)
    assert l1.tolist() == [[0, 3, 255], [2, 1, 2]]
    assert torch.equal(h.lift(fine, 2), fine)
    assert torch.equal(h.lift(h.lift(fine, 1), 0, from_level=1), l1)
    with pytest.raises(HierarchyError, match="in \\[0, 17\\]"):
        h.lift(torch.tensor([18]), 0)
    with pytest.raises(HierarchyError, match="finer"):
        h.lift(torch.tensor([0]), 2, from_level=1)


def test_encode_gid15_values(trees_dir):
    h = Hierarchy.from_yaml(trees_dir / "gid15.yaml")
    raw = np.array([[0, 4, 15], [12, 99, 3]], dtype=np.uint8)
    enc = h.encode(raw)
    assert enc.shape == (3, 2, 3) and enc.dtype == torch.long
    assert h.names[2][enc[2, 0, 0]] == "industrial_land"
    assert h.names[1][enc[1, 0, 1]] == "farmland"
    assert h.names[0][enc[0, 1, 0]] == "water"
    assert (enc[:, 0, 2] == 255).all() and (enc[:, 1, 1] == 255).all()  # undefined and unknown -> ignore


def test_encode_real_gid15_labels(trees_dir, shared_data):
    import rasterio

    h = Hierarchy.from_yaml(trees_dir / "gid15.yaml")
    files = sorted((shared_data / "gid15" / "label_gray").rglob("*.tif"))
    assert len(files) == 767
    for f in files[::25]:
        with rasterio.open(f) as src:
            raw = src.read(1)
        enc = h.encode(raw)
        valid = (enc != 255).all(0)
        assert ((enc == 255).all(0) | valid).all(), f  # ignore is ignore at every level
        assert (h.path_id(enc)[valid] >= 0).all(), f
        assert valid.float().mean() > 0.2


def test_path_id(trees_dir):
    h = _mm5b(trees_dir)
    good = h.paths.T[:, :, None]  # L x P x 1: every valid path
    assert torch.equal(h.path_id(good)[:, 0], torch.arange(18))
    bad = good.clone()
    bad[0] = (bad[0] + 1) % 4  # wrong root for every path
    assert (h.path_id(bad) == -1).all()
    ign = good.clone()
    ign[1, 0, 0] = 255
    assert h.path_id(ign)[0, 0] == -1
    batch = torch.stack([good, bad])
    assert h.path_id(batch).shape == (2, 18, 1)
    with pytest.raises(HierarchyError, match="dim -3"):
        h.path_id(torch.zeros(2, 5, 5, dtype=torch.long))


def test_repr_and_tree_str(trees_dir):
    h = _mm5b(trees_dir)
    assert "num_classes=(4, 9, 18)" in repr(h)
    s = h.tree_str()
    assert "L3[16] airport" in s and s.count("\n") == 4 + 9 + 18


# ---------------------------------------------------------------- validation errors
def _write(tmp_path, text):
    p = tmp_path / "tree.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, message",
    [
        ("tree:\n  a: [x, y]\n  a: [z]\n", "duplicate name 'a'"),
        ("tree:\n  a: [x, x]\n", "duplicate leaf name"),
        ("tree:\n  a: [x]\n  b: [x]\n", "duplicate name 'x' at level 2"),
        ("tree:\n  a: [x]\n  b:\n    c: [y]\n", "same depth"),
        ("tree:\n  a: [x, y]\nlabel_values:\n  x: 1\n  y: 1\n", "raw value 1 is mapped twice"),
        ("tree:\n  a: [x]\nlabel_values:\n  q: 1\n", "'q', which is not a leaf"),
        ("tree:\n  a: [x]\nlabel_values:\n  x: one\n", "must be an int or a list of ints"),
        ("tree:\n  a: [x]\nlabel_values:\n  x: 1\nignore_values: [1]\n", "both mapped to a leaf and listed"),
        ("tree: [a, b]\n", "non-empty mapping"),
        ("tree:\n  a: []\n", "empty list of leaves"),
        ("tree:\n  a: {}\n", "has no children"),
        ("tree:\n  a: 3\n", "must map to a mapping"),
        ("tree:\n  a: [x]\ncolour: red\n", "unknown key"),
        ("nodes:\n  a: [x]\n", "'tree' key"),
        ("tree:\n  a: [x\n", "not valid YAML"),
        ("tree:\n  a: [1]\n", "non-empty strings"),
    ],
)
def test_validation_errors(tmp_path, text, message):
    p = _write(tmp_path, text)
    with pytest.raises(HierarchyError, match=message) as err:
        Hierarchy.from_yaml(p)
    assert str(p) in str(err.value)  # the message names the file


def test_single_level_and_missing_file(tmp_path):
    # a flat list of classes is one level: the error says how to write a tree
    with pytest.raises(HierarchyError, match="non-empty mapping of root classes"):
        Hierarchy.from_yaml(_write(tmp_path, "tree: [a, b]\n"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Hierarchy.from_yaml(tmp_path / "nope.yaml")


def test_extend_errors_and_shape(trees_dir):
    h = _mm5b(trees_dir)
    with pytest.raises(HierarchyError, match="only extend a leaf"):
        h.extend("water", ["a"])
    e = h.extend("cropland", ["corn", "soybean"])
    assert e.num_classes == (4, 9, 18, 19)
    assert "cropland" not in e.leaf_raw_values and "corn" not in e.leaf_raw_values
    assert e.leaf_raw_values["forest"] == h.leaf_raw_values["forest"]


def test_encode_rejects_floats(trees_dir):
    h = _mm5b(trees_dir)
    with pytest.raises(HierarchyError, match="integers"):
        h.encode(np.array([[0.5, 1.0]]))


# ---------------------------------------------------------------- property tests
@st.composite
def random_trees(draw):
    depth = draw(st.integers(2, 4))
    counter = iter(range(10_000))

    def node(level):
        n = draw(st.integers(1, 3))
        if level == depth - 1:
            return [f"n{next(counter)}" for _ in range(n)]
        return {f"n{next(counter)}": node(level + 1) for _ in range(n)}

    tree = node(0)
    h = Hierarchy(tree)
    values = draw(st.permutations(list(range(len(h.names[-1]) + 5))))
    lv = {leaf: int(values[i]) for i, leaf in enumerate(h.names[-1])}
    return Hierarchy(tree, label_values=lv, ignore_values=[int(values[-1])])


@settings(max_examples=60, deadline=None)
@given(random_trees(), st.data())
def test_lift_gives_valid_paths(h, data):
    n = h.num_classes[-1]
    fine = torch.tensor(data.draw(st.lists(st.sampled_from([*range(n), 255]), min_size=1, max_size=40)))
    labels = h.lift_all(fine)[:, None, :]  # L x 1 x N
    pid = h.path_id(labels)[0]
    known = fine != 255
    assert torch.equal(pid[known], fine[known])
    assert (pid[~known] == -1).all()
    assert (labels[:, 0, ~known] == 255).all()


@settings(max_examples=60, deadline=None)
@given(random_trees(), st.data())
def test_encode_gives_valid_paths_or_ignore(h, data):
    raw = np.array(data.draw(st.lists(st.integers(0, 40), min_size=4, max_size=4 * 6)), dtype=np.int32)
    raw = raw[: (len(raw) // 4) * 4].reshape(-1, 4)
    enc = h.encode(raw)
    assert enc.shape == (h.num_levels, *raw.shape)
    ignored = (enc == 255).all(0)
    assert ((enc == 255).any(0) == ignored).all()
    assert (h.path_id(enc)[~ignored] >= 0).all()
    for leaf, vals in h.leaf_raw_values.items():
        for v in vals:
            m = torch.from_numpy(raw == v)
            assert (enc[-1][m] == h.names[-1].index(leaf)).all()
    for v in h.ignore_values:
        assert ignored[torch.from_numpy(raw == v)].all()
