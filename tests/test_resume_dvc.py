"""A real ``dvc repro`` of a small train stage, interrupted with SIGINT once a checkpoint exists and re-run,
resumes from that checkpoint and ends with the metrics and weights of an uninterrupted run (bit for bit).

Runs in temporary copies of this checkout's files (tracked and untracked-but-not-ignored), with this ``.venv``
reached by path; nothing in the checkout is touched. Tiny profile: synthetic data of the smoke profile, 64 px
tiles, one seed, 200 iterations, a checkpoint every 4.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hierars.project import PROJ_ROOT, deep_merge
from hierars.training import load_checkpoint

psutil = pytest.importorskip("psutil")

BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
ITERATIONS = 200  # long enough (tens of seconds) that a loaded machine still signals mid-training
TIMING_KEYS = re.compile(r"seconds")

pytestmark = pytest.mark.skipif(not DVC.exists() or not (BIN / "papermill").exists(),
                                reason="dvc / papermill not installed beside this python")


def _copy_checkout(dst: Path) -> None:
    """This checkout's working-tree files (tracked, and untracked ones git does not ignore) into ``dst``, as a
    fresh git repository."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJ_ROOT,
                         capture_output=True, check=True).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = PROJ_ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    params = deep_merge(yaml.safe_load((PROJ_ROOT / "params.yaml").read_text()),  # every key dvc.yaml names
                        yaml.safe_load((PROJ_ROOT / "tests" / "params_smoke.yaml").read_text()))
    params["train"].update(iterations=ITERATIONS, ckpt_interval=4, eval_interval=100, log_interval=1, num_threads=1,
                           seeds=[0], runs={"flat": {"head": "flat", "loss": "ce"}})
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)


def _env(repo: Path) -> dict[str, str]:
    # PYTHONPATH: the copy's hierars, not the editable install of the checkout; HIERARS_ROOT: the copy's files
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HIERARS_ROOT": str(repo),
            "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _repro(repo: Path, *targets: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DVC), "repro", *targets], cwd=repo, env=_env(repo), capture_output=True, text=True,
                          timeout=600)


def _resume_ckpts(repo: Path) -> list[Path]:
    return sorted((repo / "models" / ".resume" / "flat").glob("*/seed0/ckpt.pt"))


def _metrics(repo: Path) -> dict[str, float]:
    data = json.loads((repo / "reports" / "metrics" / "flat.json").read_text())
    return {k: v for k, v in data.items() if not TIMING_KEYS.search(k)}


def _notebook_text(repo: Path) -> str:
    return (repo / "reports" / "notebooks" / "02_train_flat.ipynb").read_text()


def test_interrupted_dvc_repro_resumes_bit_exact(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    base = tmp_path / "base"
    _copy_checkout(base)
    res = _repro(base, "prepare")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    straight, broken = tmp_path / "straight", tmp_path / "interrupted"
    shutil.copytree(base, straight, symlinks=True)
    shutil.copytree(base, broken, symlinks=True)

    t_prepare = time.perf_counter() - t0

    # uninterrupted, in the background while the other copy is interrupted and resumed
    straight_log = (tmp_path / "straight.log").open("w")
    straight_proc = subprocess.Popen([str(DVC), "repro", "train@flat"], cwd=straight, env=_env(straight),
                                     stdout=straight_log, stderr=subprocess.STDOUT)

    # interrupted: SIGINT to dvc's process group (what Ctrl-C does) once a periodic checkpoint exists
    log = (tmp_path / "interrupted.log").open("w")
    proc = subprocess.Popen([str(DVC), "repro", "train@flat"], cwd=broken, env=_env(broken), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _resume_ckpts(broken) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the train stage finished before a checkpoint appeared: raise ITERATIONS"
    family = psutil.Process(proc.pid).children(recursive=True)  # shell, papermill and the kernel (own session)
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=120)
    psutil.wait_procs(family, timeout=60)
    log.close()
    assert rc != 0, "an interrupted dvc repro must exit non-zero"
    assert not (broken / "reports" / "metrics" / "flat.json").exists()
    ckpts = _resume_ckpts(broken)
    assert len(ckpts) == 1
    stopped_at = int(load_checkpoint(ckpts[0])["iteration"])
    assert 0 < stopped_at < ITERATIONS
    text = (tmp_path / "interrupted.log").read_text()  # the kernel's stderr: papermill may not record the error
    assert "stopped by SIGINT" in text and "Run the same command again" in text, "fit's handler did not stop it"

    # re-run: resumes from the checkpoint and ends where the uninterrupted run ended
    res = _repro(broken, "train@flat")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    resumed = re.search(r"resuming \S+ at iteration (\d+)/(\d+)", _notebook_text(broken))
    assert resumed and int(resumed.group(1)) == stopped_at and int(resumed.group(2)) == ITERATIONS
    assert straight_proc.wait(timeout=600) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    straight_log.close()
    expected = _metrics(straight)
    assert expected["iteration"] == ITERATIONS
    assert _metrics(broken) == expected
    a = load_checkpoint(straight / "models" / "flat" / "seed0" / "ckpt.pt")["model"]
    b = load_checkpoint(broken / "models" / "flat" / "seed0" / "ckpt.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"dvc interrupt/resume test: stopped at {stopped_at}/{ITERATIONS}; prepare {t_prepare:.0f} s, "
          f"total {time.perf_counter() - t0:.0f} s")
