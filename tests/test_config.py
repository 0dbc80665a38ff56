"""Config: project root, path resolution, params loading and deep-merge."""

from __future__ import annotations

import pytest

from hierars.project import PROJ_ROOT, deep_merge, load_params, resolve_path, stage_paths


def test_proj_root_is_repo():
    assert (PROJ_ROOT / "hierars" / "hierarchy.py").exists()
    assert (PROJ_ROOT / "params.yaml").exists()


def test_resolve_path(tmp_path):
    assert resolve_path("notebooks") == PROJ_ROOT / "notebooks"
    assert resolve_path(tmp_path) == tmp_path


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out = deep_merge(base, {"a": {"b": 2}, "e": 3})
    assert out == {"a": {"b": 2, "c": [1, 2]}, "d": 1, "e": 3}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    out["a"]["c"].append(3)
    assert base["a"]["c"] == [1, 2]


def test_load_params_and_errors(tmp_path):
    p = load_params("params.yaml", {"seed": 123})
    assert p["seed"] == 123
    assert {"prepare", "train"} <= set(p)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping of sections"):
        load_params(bad)
    with pytest.raises(ValueError, match="overrides must be a mapping"):
        load_params("params.yaml", [1])


def test_stage_paths(tmp_path):
    paths = stage_paths({"paths": {"data": str(tmp_path)}})
    assert paths["data"] == tmp_path and paths["models"] == PROJ_ROOT / "models"
    with pytest.raises(ValueError, match="unknown key"):
        stage_paths({"paths": {"weights": "w"}})
