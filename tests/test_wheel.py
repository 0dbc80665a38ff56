"""A real install: build a wheel, install it (not editable) into a fresh venv outside the checkout, and use it there.

The fresh venv gets the third-party dependencies from this test's own environment through a ``.pth`` line (no
download); a plain path line in a ``.pth`` file does not run the ``.pth`` files of that folder, so the editable
install of this checkout stays invisible, and ``hierars`` can only come from the wheel.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    import hierars
    from hierars import Hierarchy, SlidingWindowPredictor, build_model
    assert "{venv}" in hierars.__file__, hierars.__file__
    assert "{root}" not in hierars.__file__, hierars.__file__
    names = Hierarchy.builtins()
    assert {{"gid15", "mm5b", "crop10m", "whdld", "agnet_lclu", "agnet_crop"}} <= set(names), names
    h = Hierarchy.builtin("mm5b")
    assert h.num_classes == (4, 9, 18) and [p.shape[0] for p in h.palettes()] == [4, 9, 18]
    torch.manual_seed(0)
    model = build_model("fpn", "tu-convnext_atto", 4, h, head="bhccm", decoder_channels=32)
    pred = SlidingWindowPredictor(model, h, window=64, overlap=16, progress=False).predict_array(
        np.random.default_rng(0).normal(size=(4, 80, 96)).astype("float32"))
    assert pred.shape == (3, 80, 96)
    valid = set(map(tuple, h.paths.tolist()))
    assert all(tuple(p) in valid for p in pred.reshape(3, -1).T.tolist()), "JSPS gave an invalid path"
    print("ok", hierars.__file__)
""")


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    # build from a copy of the sources, so setuptools' build/ and egg-info never land in the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT / "hierars", src / "hierars", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheel_dir = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(src)], check=True, cwd=tmp_path, capture_output=True)
    wheel = next(wheel_dir.glob("hierars-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(purelib), str(wheel)], check=True, capture_output=True)
    assert (purelib / "hierars" / "trees" / "mm5b.yaml").is_file(), "built-in trees missing from the wheel"
    run = subprocess.run([py, "-c", SCRIPT.format(venv=venv, root=ROOT / "hierars")], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok")
    entry = venv / "bin" / "hierars"
    assert (purelib / "bin" / "hierars").is_file() or entry.is_file() or any(
        p.name == "entry_points.txt" and "hierars.project.cli:main" in p.read_text()
        for p in purelib.glob("hierars-*.dist-info/*")), "console script `hierars` not declared"
