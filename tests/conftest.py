"""Shared fixtures: the real data beside the checkout (skipped cleanly when absent), tree files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hierars.hierarchy import _TREES_DIR
from hierars.project import PROJ_ROOT

torch.set_num_threads(int(os.environ.get("HIERARS_TEST_THREADS", "2")))

SHARED_DATA = Path(os.environ.get("HIERARS_SHARED_DATA", PROJ_ROOT.parent / "shared" / "data"))
TREES = _TREES_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$HIERARS_SHARED_DATA``); skips the test when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def trees_dir() -> Path:
    return TREES
