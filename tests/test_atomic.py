"""Atomic writes: the final file holds the new content and gets the mode ``open`` would give (0o666 & ~umask)."""

from __future__ import annotations

import os
import stat

import pytest

from hierars.atomic import atomic_write_bytes, atomic_write_csv, atomic_write_json, temporary_path


@pytest.fixture
def umask():
    """Run the test under a given umask, restoring the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_outputs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    for name, write in (("a.bin", lambda p: atomic_write_bytes(p, b"x")),
                        ("m.json", lambda p: atomic_write_json(p, {"a": 1})),
                        ("c.csv", lambda p: atomic_write_csv(p, [{"iteration": 1}]))):
        path = tmp_path / name
        write(path)
        assert _mode(path) == 0o666 & ~mask, (name, oct(_mode(path)), oct(mask))
    assert _mode(temporary_path(tmp_path / "t.pt")) == 0o666 & ~mask


def test_readable_by_others_under_the_usual_umask(tmp_path, umask):
    umask(0o022)
    atomic_write_bytes(tmp_path / "ckpt.bin", b"weights")
    assert _mode(tmp_path / "ckpt.bin") & stat.S_IROTH and _mode(tmp_path / "ckpt.bin") & stat.S_IRGRP


def test_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "m.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]
