"""hierars.training.allocator: glibc keeps freed training tensors instead of unmapping them (checked in fresh
processes, since the setting is per process and cannot be undone)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest

try:
    _GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")
except OSError:  # pragma: no cover - no C library handle
    _GLIBC = False

pytestmark = pytest.mark.skipif(not _GLIBC, reason="glibc >= 2.33 (mallinfo2) only")

# bytes of a tensor's allocation that glibc served with its own mmap (mallinfo2().hblkhd grows by them)
_PROBE = textwrap.dedent("""
    import ctypes, torch
    from hierars.training.allocator import retain_freed_memory
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    def mapped(nbytes):
        before = libc.mallinfo2().hblkhd
        t = torch.empty(nbytes // 4)
        grown = libc.mallinfo2().hblkhd - before
        del t
        return grown
    print(mapped(24 << 20), retain_freed_memory(), retain_freed_memory(), mapped(24 << 20), mapped(64 << 20))
""")


def _run(env_extra: dict[str, str] | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


def test_blocks_up_to_the_threshold_come_from_the_heap_after_the_call():
    before, first, second, after, huge = _run()
    assert int(before) >= 24 << 20  # glibc's default: a fresh 24 MiB block is its own mapping (freed = unmapped)
    assert (first, second) == ("True", "True")  # in effect, and idempotent
    assert int(after) == 0  # now it is heap memory, reused after free
    assert int(huge) >= 64 << 20  # above MMAP_THRESHOLD (32 MiB) blocks are still mapped


def test_a_users_environment_setting_wins():
    before, first, _, after, _ = _run({"MALLOC_MMAP_THRESHOLD_": "131072"})
    assert first == "False"
    assert int(after) >= 24 << 20  # the user's 128 KiB threshold still maps the block


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core per arm")
@pytest.mark.parametrize("lever", ["malloc", "optimizer"])
def test_bench_step_ab_smoke(tmp_path, lever):
    """benchmarks/bench_step_ab.py: both arms ran, on different cores swapped between rounds, with the malloc setting
    in every arm but the malloc lever's baseline."""
    import json
    from pathlib import Path

    out = tmp_path / f"{lever}.json"
    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_step_ab.py"
    subprocess.run([sys.executable, str(bench), "--lever", lever, "--rounds", "2", "--warmup", "1", "--steps", "2",
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    report = json.loads(out.read_text())
    base, cand = {"malloc": ("system", "retained"), "optimizer": ("for_loop", "fused")}[lever]
    assert (report["lever"], report["baseline"], report["candidate"]) == (lever, base, cand)
    assert len(report["ratios"]) == 2 and all(r > 0 for r in report["ratios"])
    for rd in report["per_round"]:
        runs = rd["runs"]
        assert set(runs) == {base, cand}
        assert runs[cand]["applied"] is True and runs[base]["applied"] is (lever != "malloc")
        assert runs[cand]["core"] != runs[base]["core"]
        assert all(t > 0 for arm in runs.values() for t in arm["step_s"])
    assert report["per_round"][0]["runs"][base]["core"] == report["per_round"][1]["runs"][cand]["core"]
